"""Federated learning: the model registry, study progress entries, round time-outs."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from healthspace.hub.db.types import UTCDateTime

revision: str = "0008_learning"
down_revision: str | None = "0007_metering"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("round_timeout_seconds", sa.Integer(), nullable=True))
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False,
                  unique=True),
        sa.Column("owner_org_id", sa.Integer(), sa.ForeignKey("organisations.id"),
                  nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("release", sa.String(16), nullable=False),
        sa.Column("package", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_models_name_version"),
    )
    op.create_index("ix_models_name", "models", ["name"])
    op.create_index("ix_models_owner_org_id", "models", ["owner_org_id"])
    op.create_table(
        "study_progress",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=False),
    )
    op.create_index("ix_study_progress_study_id", "study_progress", ["study_id"])


def downgrade() -> None:
    op.drop_table("study_progress")
    op.drop_table("models")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("round_timeout_seconds")
