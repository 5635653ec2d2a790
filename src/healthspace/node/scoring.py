"""Score a node's own patients with a registered model; the scores stay in its state file.

The same ``score`` analysis a score study runs, started by the node operator: the cohort and
analysis dataset are built on the read-only store (consent for the purpose applied), every
person is scored, and the scores are written into the state's ``model_scores`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthspace.analyses.execute import run_alone
from healthspace.cdm.store import open_store
from healthspace.node import consent
from healthspace.node.state import NodeState


@dataclass(frozen=True)
class LocalScoring:
    model_id: int
    scored: int
    histogram: list[dict[str, Any]]


def score_locally(store: Path, state: NodeState, package: dict[str, Any], *,
                  cohort: dict[str, Any], dataset: dict[str, Any],
                  purpose: str = "clinical_care", bins: int = 10) -> LocalScoring:
    """Score the cohort on this node with ``package`` (a ``ModelPackage`` as a dict)."""
    model = {key: package[key] for key in ("id", "name", "version", "architecture",
                                           "preparation", "weights")}
    policy = state.policy()
    con = open_store(store, read_only=True)
    try:
        result = run_alone(
            con, site=state.node_name(), analysis="score",
            params={"model_id": int(package["id"]), "bins": bins}, cohort=cohort,
            dataset=dataset, round_input={"model": model},
            min_cell_size=policy.min_cell_size, purpose=purpose,
            consent=consent.build_filter(state, purpose),
            score_sink=lambda m, ids, scores: state.save_scores(m, None, ids, scores),
        )
    finally:
        con.close()
    return LocalScoring(int(package["id"]), int(result["scored"]), list(result["histogram"]))
