"""Pairing codes keyed by code, not by camera: a camera's earlier codes are kept for a while
after it shows a new one, so that a person typing the old one is told it expired instead of
"wrong".

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = "device_id, code_hash, claim_hash, expires_at, created_at"


def _table(name: str, *, by_device: bool) -> None:
    # Constraint names are spelt out: PostgreSQL names them after the table at creation, and
    # the table is renamed afterwards.
    op.create_table(
        name,
        sa.Column(
            "device_id",
            sa.String(64),
            sa.ForeignKey("devices.id", name=f"fk_{name}_device"),
            nullable=False,
        ),
        sa.Column("code_hash", sa.String(128), nullable=False),
        sa.Column("claim_hash", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("device_id" if by_device else "code_hash", name=f"pk_{name}"),
        sa.UniqueConstraint("code_hash", name=f"uq_{name}_code"),
        sa.UniqueConstraint("claim_hash", name=f"uq_{name}_claim"),
    )


def upgrade() -> None:
    _table("pairing_codes_next", by_device=False)
    op.execute(f"INSERT INTO pairing_codes_next ({COLUMNS}) SELECT {COLUMNS} FROM pairing_codes")
    op.drop_table("pairing_codes")
    op.rename_table("pairing_codes_next", "pairing_codes")
    op.create_index("ix_pairing_codes_device_id", "pairing_codes", ["device_id"])


def downgrade() -> None:
    _table("pairing_codes_prev", by_device=True)
    # one code per camera again: its newest
    op.execute(
        f"INSERT INTO pairing_codes_prev ({COLUMNS}) SELECT {COLUMNS} FROM pairing_codes p "
        "WHERE p.created_at = (SELECT MAX(q.created_at) FROM pairing_codes q "
        "WHERE q.device_id = p.device_id)"
    )
    op.drop_index("ix_pairing_codes_device_id", "pairing_codes")
    op.drop_table("pairing_codes")
    op.rename_table("pairing_codes_prev", "pairing_codes")
