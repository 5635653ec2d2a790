"""Governance schema: envelopes, nonces, key history, node decisions, approvals, timeline."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_governance"
down_revision: str | None = "0002_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(table: str) -> tuple[sa.Column, sa.PrimaryKeyConstraint]:
    return (
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    )


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _index(table: str, *columns: str) -> None:
    with op.batch_alter_table(table) as batch_op:
        for column in columns:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def _create_tables() -> None:
    op.create_table(
        "envelopes",
        *_id("envelopes"),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("round", sa.Integer(), nullable=True),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        _ts("received_at"),
        _fk("envelopes", "node_id", "nodes"),
        sa.UniqueConstraint("nonce", name=op.f("uq_envelopes_nonce")),
    )
    _index("envelopes", "node_id", "study_id")
    op.create_table(
        "envelope_nonces",
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        _ts("seen_at"),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_envelope_nonces")),
    )
    _index("envelope_nonces", "seen_at")
    op.create_table(
        "node_keys",
        *_id("node_keys"),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        _ts("registered_at"),
        _ts("retired_at", nullable=True),
        _fk("node_keys", "node_id", "nodes"),
        sa.UniqueConstraint("public_key", name="uq_node_keys_public_key"),
    )
    _index("node_keys", "node_id")
    op.create_table(
        "study_approvals",
        *_id("study_approvals"),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("by_user_id", sa.Integer(), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        _ts("at"),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("ethics_ref", sa.String(200), nullable=True),
        _fk("study_approvals", "by_user_id", "users"),
        _fk("study_approvals", "node_id", "nodes"),
        _fk("study_approvals", "study_id", "studies"),
    )
    _index("study_approvals", "study_id")
    op.create_table(
        "study_events",
        *_id("study_events"),
        sa.Column("study_id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        _fk("study_events", "study_id", "studies"),
    )
    _index("study_events", "study_id")
    op.create_table(
        "study_feedback",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("by_user_id", sa.Integer(), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        _ts("at"),
        _fk("study_feedback", "by_user_id", "users"),
        _fk("study_feedback", "study_id", "studies"),
        sa.PrimaryKeyConstraint("study_id", name=op.f("pk_study_feedback")),
    )


def _extend_tables() -> None:
    with op.batch_alter_table("nodes") as batch_op:
        batch_op.add_column(sa.Column("policy", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("policy_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("policy_envelope_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("study_nodes") as batch_op:
        batch_op.add_column(sa.Column("decision", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("approval_mode", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("missing_steps", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("policy_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("min_cell_size", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("approval", sa.String(16), nullable=True))
        batch_op.add_column(_ts("expires_at", nullable=True))
        batch_op.create_index(batch_op.f("ix_study_nodes_approval"), ["approval"], unique=False)
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("envelope_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_tasks_envelope_id_envelopes"), "envelopes", ["envelope_id"], ["id"]
        )
    with op.batch_alter_table("hub_keys") as batch_op:
        batch_op.add_column(_ts("retired_at", nullable=True))
        batch_op.add_column(sa.Column("rotation", sa.JSON(), nullable=True))


def upgrade() -> None:
    _create_tables()
    _extend_tables()
    # Keys registered before this revision become the first entry of each node's key history.
    op.execute(
        "INSERT INTO node_keys (node_id, public_key, registered_at) "
        "SELECT id, public_key, enrolled_at FROM nodes WHERE public_key IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("hub_keys") as batch_op:
        batch_op.drop_column("rotation")
        batch_op.drop_column("retired_at")
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_tasks_envelope_id_envelopes"), type_="foreignkey")
        batch_op.drop_column("envelope_id")
    with op.batch_alter_table("study_nodes") as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_nodes_approval"))
        for column in ("expires_at", "approval", "min_cell_size", "policy_version",
                       "missing_steps", "approval_mode", "reasons", "decision"):
            batch_op.drop_column(column)
    with op.batch_alter_table("nodes") as batch_op:
        for column in ("policy_envelope_id", "policy_version", "policy"):
            batch_op.drop_column(column)
    for table in ("study_feedback", "study_events", "study_approvals", "node_keys",
                  "envelope_nonces", "envelopes"):
        op.drop_table(table)
