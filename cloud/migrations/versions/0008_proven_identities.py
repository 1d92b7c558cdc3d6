"""Proven identities: verified e-mail addresses, one-time account links (verification, password
reset, address change), operators granted on the server, and the name a camera had with its
last owner (kept for that owner's re-pairing).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Accounts made before verification existed have proven nothing: they start unverified.
    op.add_column("users", sa.Column("email_verified_at", sa.Float, nullable=True))
    op.create_table(
        "account_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_index("ix_account_links_user_purpose", "account_links", ["user_id", "purpose"])
    op.create_table(
        "operators",
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.add_column("devices", sa.Column("former_owner_id", sa.String(64), nullable=True))
    op.add_column("devices", sa.Column("former_name", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("former_name")
        batch.drop_column("former_owner_id")
    op.drop_table("operators")
    op.drop_index("ix_account_links_user_purpose", "account_links")
    op.drop_table("account_links")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_at")
