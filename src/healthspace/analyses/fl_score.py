"""Scoring with a registered model on the node: risk scores stay in a local table.

The hub puts the model (architecture, feature preparation, weights) into the signed task;
the node scores each person of the study's analysis dataset, writes the scores into its own
``model_scores`` table and sends back only the number of persons scored and a coarse
histogram of their scores (cells under the minimum cell size suppressed by ``combine``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field

from healthspace.analyses.base import Final, LocalContext, NextRound, Params, Summable
from healthspace.analyses.registry import register
from healthspace.analyses.secure import SummedAnalysis
from healthspace.core.encoding import decode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.learning.features import Preparation
from healthspace.learning.models import Architecture, predict

TABLE = "analysis_data"
PERSON = "_person_id"


class ScoreParams(Params):
    model_id: int = Field(ge=1, description="the registered model (healthspace models list)")
    bins: int = Field(default=10, ge=2, le=20, description="histogram bins of the scores")


def score_rows(model: Mapping[str, Any], data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(person ids, scores) of the rows of ``data`` that have every model feature."""
    prep = Preparation.from_dict(model["preparation"])
    arch = Architecture.from_dict(model["architecture"])
    missing = [f for f in prep.features if f not in data.columns]
    if missing:
        raise InvalidInput(f"the dataset lacks the model's feature(s): {', '.join(missing)}",
                           field="dataset")
    rows = data.dropna(subset=list(prep.features)).reset_index(drop=True)
    ids = (rows[PERSON].to_numpy(dtype=np.int64) if PERSON in rows.columns
           else np.arange(len(rows), dtype=np.int64))
    X = prep.encode(rows)
    if X.shape[1] != arch.inputs:
        raise InvalidInput("the model's preparation and architecture disagree", field="model")
    return ids, predict(arch, decode_array(model["weights"]), X)


class Score(SummedAnalysis):
    name = "score"
    title = "Score persons with a registered model (scores stay on the node)"
    params_model = ScoreParams
    requires_cohort = False
    uses_table = True
    needs_person_ids = True

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        assert isinstance(params, ScoreParams)
        model = (round_input or {}).get("model")
        if not isinstance(model, dict) or int(model.get("id", 0)) != params.model_id:
            raise InvalidInput("a score task carries its model from the hub's registry",
                               field="round_input.model")
        data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
        ids, scores = score_rows(model, data)
        ctx.records_used = len(ids)
        if len(ids) < ctx.min_cell_size:
            raise Refused(f"only {len(ids)} persons to score, below the minimum cell size "
                          f"{ctx.min_cell_size}")
        if ctx.score_sink is not None:
            ctx.score_sink(model, ids.tolist(), scores.tolist())
        coarse = np.minimum((scores * params.bins).astype(np.int64), params.bins - 1)
        hist = np.bincount(coarse, minlength=params.bins).astype(np.int64)
        public: dict[str, Any] = {"k": ctx.min_cell_size,
                                  "n": len(ids) if ctx.release_site_counts else None}
        return Summable(public, {"n": np.asarray([len(ids)]), "hist": hist},
                        frozenset({"n", "hist"}))

    def combine_secure(
        self, sums: Mapping[str, np.ndarray], publics: Mapping[str, dict[str, Any]],
        params: Params, state: dict[str, Any], round: int,
    ) -> Final | NextRound:
        assert isinstance(params, ScoreParams)
        if not publics:
            raise Refused("no node scored any person")
        k = max(int(p.get("k", 10)) for p in publics.values())
        hist = np.asarray(sums["hist"], dtype=np.int64)
        histogram = [{"bin": [b / params.bins, (b + 1) / params.bins],
                      "n": None if 0 < int(c) < k else int(c)} for b, c in enumerate(hist)]
        return Final({"model_id": params.model_id, "scored": int(sums["n"][0]),
                      "histogram": histogram, "min_cell_size": k,
                      "sites": {name: publics[name].get("n") for name in sorted(publics)},
                      "stored_in": "model_scores (each node's state)"})


register(Score())
