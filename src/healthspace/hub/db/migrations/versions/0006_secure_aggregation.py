"""Secure aggregation: studies may mask partials; nodes' one-time prekeys; sessions.

Task partials are no longer copied into ``tasks.partial``: they are read from the signed
envelope that carried them (stored once; masked partials run to megabytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from healthspace.hub.db.types import UTCDateTime

revision: str = "0006_secure_aggregation"
down_revision: str | None = "0005_study_preview"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(
            sa.Column("secure", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "secagg_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("roster", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_secagg_sessions_study_id", "secagg_sessions", ["study_id"])
    op.create_table(
        "secagg_prekeys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("prekey", sa.JSON(), nullable=False),
        sa.Column("node_key", sa.String(128), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.Column("session_id", sa.Integer(), sa.ForeignKey("secagg_sessions.id"),
                  nullable=True),
    )
    op.create_index("ix_secagg_prekeys_node_id", "secagg_prekeys", ["node_id"])
    op.create_index("ix_secagg_prekeys_session_id", "secagg_prekeys", ["session_id"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("secagg_session_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_tasks_secagg_session_id_secagg_sessions",
                                 "secagg_sessions", ["secagg_session_id"], ["id"])
        batch.drop_column("partial")


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("fk_tasks_secagg_session_id_secagg_sessions", type_="foreignkey")
        batch.drop_column("secagg_session_id")
        batch.add_column(sa.Column("partial", sa.JSON(), nullable=True))
    op.drop_table("secagg_prekeys")
    op.drop_table("secagg_sessions")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("secure")
