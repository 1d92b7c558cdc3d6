"""The database tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Times are Unix seconds (float) so that both databases store and compare them alike.  The schema
is created and changed only by the migrations in ``cloud/migrations/versions``; this module
mirrors the newest migration for the queries in ``cloud.store``.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, MetaData, String, Table, Text

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float, nullable=True),
    #: When the person proved the address (a link mailed to it was opened); NULL: not yet.
    Column("email_verified_at", Float, nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("owner_id", String(64), ForeignKey("users.id"), nullable=True, index=True),
    Column("paired_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=True),
    #: Set when a factory reset retired the device: it has no owner and its token is refused.
    Column("retired_at", Float, nullable=True),
    #: The owner before the last unpairing and the name it gave: the same owner pairing it
    #: again gets its name back; another owner does not see it.
    Column("former_owner_id", String(64), nullable=True),
    Column("former_name", String(128), nullable=True),
)

pairing_codes = Table(
    "pairing_codes",
    metadata,
    Column("device_id", String(64), ForeignKey("devices.id"), nullable=False, index=True),
    #: One row per code: a camera's earlier codes stay a while after it shows a new one.
    Column("code_hash", String(128), primary_key=True),
    Column("claim_hash", String(128), nullable=False, unique=True),
    Column("expires_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

watch_sessions = Table(
    "watch_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("device_id", String(64), ForeignKey("devices.id"), nullable=False),
    Column("viewer_id", String(64), ForeignKey("users.id"), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("end_reason", String(32), nullable=True),
    #: "direct" or "relay", as the viewer reported it (relayed once: "relay"); NULL: never
    #: reported (it ended before the video flowed, or an older web app).
    Column("media_path", String(8), nullable=True),
    Index("ix_watch_sessions_device_started", "device_id", "started_at"),
    Index("ix_watch_sessions_active", "ended_at"),
)

#: One row per browser (or other client) signed in to an account: its refresh token, kept as a
#: SHA-256 hash of the current token and of the one it replaced (for the grace of two tabs
#: refreshing at once).  Access tokens name their sign-in (``sid``); revoking the row refuses
#: them all.
sign_ins = Table(
    "sign_ins",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False, index=True),
    Column("refresh_hash", String(64), nullable=False),
    Column("previous_hash", String(64), nullable=True),
    Column("rotated_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("revoke_reason", String(32), nullable=True),
    Column("user_agent", String(256), nullable=True),
)

#: Accounts an owner shares a camera with, as viewers (watch only).  A row holds only while the
#: camera keeps the owner who added it: unpairing, pairing by another account, a factory reset
#: and deleting the owner's account delete the camera's rows in the same transaction.
device_viewers = Table(
    "device_viewers",
    metadata,
    Column("device_id", String(64), ForeignKey("devices.id"), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), primary_key=True),
    Column("added_at", Float, nullable=False),
    #: How the viewer came: "email" (an invitation to their address) or "link".
    Column("via", String(16), nullable=False),
    Index("ix_device_viewers_user", "user_id"),
)

#: Invitations to watch a camera, not yet accepted: to an e-mail address (``email``; the account
#: with that address accepts it, now or after signing up) or a one-time link (``token_hash``, a
#: keyed hash of the link's token).  Each names the owner who made it: it is void once the
#: camera has another owner (and deleted with the camera's viewers).
share_invites = Table(
    "share_invites",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("device_id", String(64), ForeignKey("devices.id"), nullable=False, index=True),
    Column("owner_id", String(64), ForeignKey("users.id"), nullable=False),
    Column("email", String(320), nullable=True, index=True),
    Column("token_hash", String(128), nullable=True, unique=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: One-time links mailed to an address: ``purpose`` "verify" (prove the account's address),
#: "reset" (choose a new password) or "email" (prove a new address before it replaces the old).
#: Only a SHA-256 hash of the link's token is kept; a link is spent (``used_at``) or expires.
account_links = Table(
    "account_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False),
    Column("purpose", String(16), nullable=False),
    #: The address the link was mailed to (for "email": the new address it proves).
    Column("email", String(320), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
    Index("ix_account_links_user_purpose", "user_id", "purpose"),
)

#: Accounts with operator rights (releases and rollouts), granted on the server with
#: ``mumu-cloud operator add`` to an existing account whose address is verified.
operators = Table(
    "operators",
    metadata,
    Column("user_id", String(64), ForeignKey("users.id"), primary_key=True),
    Column("added_at", Float, nullable=False),
)
