"""Over-the-air updates: releases, staged rollouts, and each device's version and update state.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("arches", sa.String(128), nullable=False),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(64), sa.ForeignKey("releases.version"), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("percentage", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure_threshold", sa.Float, nullable=False),
        sa.Column("min_sample", sa.Integer, nullable=False),
        sa.Column("paused_reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_rollouts_channel_state", "rollouts", ["channel", "state"])
    op.create_table(
        "device_updates",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.Column("arch", sa.String(32), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False, server_default="stable"),
        sa.Column("window", sa.String(16), nullable=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=True),
        sa.Column("target_version", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("progress", sa.Float, nullable=True),
        sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_device_updates_rollout", "device_updates", ["rollout_id", "state"])
    op.create_index("ix_device_updates_channel", "device_updates", ["channel"])


def downgrade() -> None:
    op.drop_index("ix_device_updates_channel", "device_updates")
    op.drop_index("ix_device_updates_rollout", "device_updates")
    op.drop_table("device_updates")
    op.drop_index("ix_rollouts_channel_state", "rollouts")
    op.drop_table("rollouts")
    op.drop_table("releases")
