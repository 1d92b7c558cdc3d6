"""The update tables (migration 0004), on the same metadata as ``cloud.schema``."""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, String, Table, Text

from cloud.schema import metadata

releases = Table(
    "releases",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("arches", String(128), nullable=False),
    Column("notes", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(64), ForeignKey("releases.version"), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("percentage", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("failure_threshold", Float, nullable=False),
    Column("min_sample", Integer, nullable=False),
    Column("paused_reason", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_rollouts_channel_state", "channel", "state"),
)

device_updates = Table(
    "device_updates",
    metadata,
    Column("device_id", String(64), ForeignKey("devices.id"), primary_key=True),
    Column("agent_version", String(64), nullable=True),
    Column("arch", String(32), nullable=True),
    Column("channel", String(32), nullable=False, server_default="stable"),
    Column("window", String(16), nullable=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=True),
    Column("target_version", String(64), nullable=True),
    Column("state", String(16), nullable=True),
    Column("reason", Text, nullable=True),
    Column("progress", Float, nullable=True),
    Column("seq", Integer, nullable=False, server_default="0"),
    Column("updated_at", Float, nullable=False),
    Index("ix_device_updates_rollout", "rollout_id", "state"),
    Index("ix_device_updates_channel", "channel"),
)
