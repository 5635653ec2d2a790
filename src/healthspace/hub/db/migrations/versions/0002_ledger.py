"""Audit ledger tables: hash-chained entries and signed Merkle checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_ledger"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Frozen copy of healthspace.ledger.sqla_store.LEDGER_METADATA at this revision.
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(1000), nullable=False),
        sa.Column("payload_digest", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ledger_id", sa.String(200), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_checkpoints")),
        sa.UniqueConstraint("size", name=op.f("uq_ledger_checkpoints_size")),
    )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_entries")
