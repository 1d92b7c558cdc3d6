"""Remember each account's last sign-in; index live watch sessions for the janitor.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("last_login_at", sa.Float, nullable=True))
    op.create_index("ix_watch_sessions_active", "watch_sessions", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_watch_sessions_active", "watch_sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_login_at")
