"""Analysis datasets: one row per cohort member, built on the node (placeholder interface)."""

from __future__ import annotations

from typing import Any

from healthspace.core.errors import InvalidInput


def load_dataset(raw: Any) -> Any:
    raise InvalidInput("analysis datasets are not available yet", field="dataset")


def build_analysis_table(ctx: Any, spec: Any, table: str = "analysis_data") -> int:
    raise InvalidInput("analysis datasets are not available yet", field="dataset")
