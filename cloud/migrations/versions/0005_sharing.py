"""Sharing a camera with viewers: who may watch it besides its owner, and open invitations.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_viewers",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("added_at", sa.Float, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
    )
    op.create_index("ix_device_viewers_user", "device_viewers", ["user_id"])
    op.create_table(
        "share_invites",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("token_hash", sa.String(128), nullable=True, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_share_invites_device_id", "share_invites", ["device_id"])
    op.create_index("ix_share_invites_email", "share_invites", ["email"])


def downgrade() -> None:
    op.drop_index("ix_share_invites_email", "share_invites")
    op.drop_index("ix_share_invites_device_id", "share_invites")
    op.drop_table("share_invites")
    op.drop_index("ix_device_viewers_user", "device_viewers")
    op.drop_table("device_viewers")
