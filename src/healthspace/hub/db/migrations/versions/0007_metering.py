"""Metering, settlement and service levels: meter records, accounts, settlements, breaches."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from healthspace.hub.db.types import UTCDateTime

revision: str = "0007_metering"
down_revision: str | None = "0006_secure_aggregation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True)


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("estimate_cents", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("sla_checked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("study_nodes") as batch:
        batch.add_column(sa.Column("prices", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("sla", sa.JSON(), nullable=True))
    op.create_table(
        "meter_records",
        _id(),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id"), nullable=False,
                  unique=True),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("analysis", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("preview", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("records_scanned", sa.BigInteger(), nullable=False),
        sa.Column("persons", sa.BigInteger(), nullable=False),
        sa.Column("persons_band", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("envelope_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )
    for column in ("study_id", "node_id", "recorded_at"):
        op.create_index(f"ix_meter_records_{column}", "meter_records", [column])
    op.create_table(
        "billing_accounts",
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organisations.id"), primary_key=True),
        sa.Column("prepaid_cents", sa.BigInteger(), nullable=False),
        sa.Column("credit_limit_cents", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "settlements",
        _id(),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False,
                  unique=True),
        sa.Column("consumer_org_id", sa.Integer(), sa.ForeignKey("organisations.id"),
                  nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("fee_rate", sa.Float(), nullable=False),
        sa.Column("invoiced_cents", sa.BigInteger(), nullable=False),
        sa.Column("fee_cents", sa.BigInteger(), nullable=False),
        sa.Column("earned_cents", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_settlements_consumer_org_id", "settlements", ["consumer_org_id"])
    op.create_index("ix_settlements_period", "settlements", ["period"])
    op.create_table(
        "settlement_lines",
        _id(),
        sa.Column("settlement_id", sa.Integer(), sa.ForeignKey("settlements.id"),
                  nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("holder_org_id", sa.Integer(), sa.ForeignKey("organisations.id"),
                  nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("charge_cents", sa.BigInteger(), nullable=False),
        sa.Column("fee_cents", sa.BigInteger(), nullable=False),
        sa.Column("earned_cents", sa.BigInteger(), nullable=False),
    )
    for column in ("settlement_id", "study_id", "holder_org_id", "period"):
        op.create_index(f"ix_settlement_lines_{column}", "settlement_lines", [column])
    op.create_table(
        "sla_breaches",
        _id(),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target_seconds", sa.Float(), nullable=False),
        sa.Column("actual_seconds", sa.Float(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("study_id", "node_id", "kind",
                            name="uq_sla_breaches_study_node_kind"),
    )
    op.create_index("ix_sla_breaches_study_id", "sla_breaches", ["study_id"])
    op.create_index("ix_sla_breaches_detected_at", "sla_breaches", ["detected_at"])


def downgrade() -> None:
    for table in ("sla_breaches", "settlement_lines", "settlements", "billing_accounts",
                  "meter_records"):
        op.drop_table(table)
    with op.batch_alter_table("study_nodes") as batch:
        batch.drop_column("sla")
        batch.drop_column("prices")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("sla_checked")
        batch.drop_column("estimate_cents")
