"""Initial hub schema: organisations, users, nodes, tokens, studies, tasks, hub keys."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
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


def upgrade() -> None:
    op.create_table(
        "hub_keys",
        *_id("hub_keys"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("private_key", sa.String(128), nullable=False),
        sa.Column("public_key", sa.String(128), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "organisations",
        *_id("organisations"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        _ts("created_at"),
        sa.UniqueConstraint("name", name=op.f("uq_organisations_name")),
    )
    op.create_table(
        "nodes",
        *_id("nodes"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.String(128), nullable=True),
        sa.Column("catalog", sa.JSON(), nullable=True),
        _ts("enrolled_at"),
        _ts("last_seen_at", nullable=True),
        _fk("nodes", "org_id", "organisations"),
        sa.UniqueConstraint("name", name=op.f("uq_nodes_name")),
    )
    _index("nodes", "org_id")
    op.create_table(
        "users",
        *_id("users"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        _ts("created_at"),
        _fk("users", "org_id", "organisations"),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    _index("users", "org_id")
    op.create_table(
        "studies",
        *_id("studies"),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("analysis", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("cohort", sa.JSON(), nullable=True),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("submitted_by", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        _fk("studies", "submitted_by", "users"),
    )
    _index("studies", "status", "submitted_by")
    op.create_table(
        "tokens",
        *_id("tokens"),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(100), nullable=True),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.CheckConstraint(
            "(user_id IS NOT NULL AND node_id IS NULL)"
            " OR (user_id IS NULL AND node_id IS NOT NULL)",
            name=op.f("ck_tokens_one_principal"),
        ),
        _fk("tokens", "node_id", "nodes"),
        _fk("tokens", "user_id", "users"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    _index("tokens", "node_id", "user_id")
    op.create_table(
        "study_nodes",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        _fk("study_nodes", "node_id", "nodes"),
        _fk("study_nodes", "study_id", "studies"),
        sa.PrimaryKeyConstraint("study_id", "node_id", name=op.f("pk_study_nodes")),
    )
    _index("study_nodes", "node_id")
    op.create_table(
        "tasks",
        *_id("tasks"),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("round_input", sa.JSON(), nullable=True),
        sa.Column("partial", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("min_cell_size", sa.Integer(), nullable=False),
        _ts("queued_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _fk("tasks", "node_id", "nodes"),
        _fk("tasks", "study_id", "studies"),
        sa.UniqueConstraint("study_id", "node_id", "round", name="uq_tasks_study_node_round"),
    )
    _index("tasks", "node_id", "status", "study_id")


def downgrade() -> None:
    for table in (
        "tasks",
        "study_nodes",
        "tokens",
        "studies",
        "users",
        "nodes",
        "organisations",
        "hub_keys",
    ):
        op.drop_table(table)
