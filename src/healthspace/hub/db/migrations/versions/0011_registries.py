"""Specialty-disease registries: names, versions, node materialisation status; the registry
version a study targeted."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from healthspace.hub.db.types import UTCDateTime

revision: str = "0011_registries"
down_revision: str | None = "0010_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "registry_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("registry_id", sa.Integer(), sa.ForeignKey("registries.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("cohort", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.JSON(), nullable=False),
        sa.Column("refresh", sa.JSON(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("registry_id", "version",
                            name="uq_registry_versions_registry_version"),
    )
    op.create_index("ix_registry_versions_registry_id", "registry_versions", ["registry_id"])
    op.create_table(
        "registry_node_status",
        sa.Column("registry_id", sa.Integer(), sa.ForeignKey("registries.id"),
                  primary_key=True),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id"), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("size", sa.String(16), nullable=True),
        sa.Column("dataset_size", sa.String(16), nullable=True),
        sa.Column("refreshed_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.Column("envelope_id", sa.Integer(), nullable=False),
    )
    op.create_index("ix_registry_node_status_node_id", "registry_node_status", ["node_id"])
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("registry_ref", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("registry_ref")
    op.drop_index("ix_registry_node_status_node_id", "registry_node_status")
    op.drop_table("registry_node_status")
    op.drop_index("ix_registry_versions_registry_id", "registry_versions")
    op.drop_table("registry_versions")
    op.drop_table("registries")
