"""How a watch session's video travelled (direct or relayed), for the history.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("watch_sessions", sa.Column("media_path", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watch_sessions") as batch:
        batch.drop_column("media_path")
