"""Case mix across hospitals: inpatient cases per DRG, mean charge and length of stay.

Every node groups its own inpatient cases with the study's rule file (``payer.grouper``) and
sends, per DRG of the rule file, the case count and the sums of charge and length of stay —
fixed-length vectors, so under secure aggregation the hub decodes only network totals. In
clear a node suppresses its own cells under the minimum cell size first; the result then
says how many cells were suppressed. Network cells under k are suppressed in ``combine``.
``relative_weight`` is the DRG's mean charge over the overall mean charge, untrimmed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from healthspace.analyses.base import Final, LocalContext, NextRound, Params, Summable
from healthspace.analyses.registry import register
from healthspace.analyses.secure import SummedAnalysis, clear_partial
from healthspace.core.errors import Refused
from healthspace.payer.cases import grouped_cases
from healthspace.payer.rules import GroupingRules, load_rules

_LABELS = ("cases", "charged", "charge", "los")


class CasemixParams(Params):
    rules: dict[str, Any] | None = Field(
        default=None, description="a grouping rule file (docs/payer.md); null = the sample")

    @field_validator("rules")
    @classmethod
    def _valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            load_rules(value)
        return value

    @property
    def grouping(self) -> GroupingRules:
        return load_rules(self.rules)


def node_cases(ctx: LocalContext, rules: GroupingRules) -> tuple[pd.DataFrame, np.ndarray]:
    """This node's consented inpatient cases, grouped, and each case's DRG position in
    ``rules.drg_codes()``; the persons behind them are the node's metered records."""
    frame = grouped_cases(ctx.con, rules, ctx.consented_persons_sql())
    ctx.records_used = int(frame["person_id"].nunique()) if len(frame) else 0
    index = {code: i for i, code in enumerate(rules.drg_codes())}
    return frame, np.asarray([index[d] for d in frame["drg"]], dtype=np.int64)


class Casemix(SummedAnalysis):
    name = "casemix"
    title = "Case mix: DRG case counts, mean charge and length of stay"
    params_model = CasemixParams
    requires_cohort = False

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        assert isinstance(params, CasemixParams)
        rules = params.grouping
        codes = rules.drg_codes()
        frame, slot = node_cases(ctx, rules)
        charged = frame["cost"].notna().to_numpy()
        sums = {
            "cases": np.bincount(slot, minlength=len(codes)).astype(np.int64),
            "charged": np.bincount(slot[charged], minlength=len(codes)).astype(np.int64),
            "charge": np.bincount(slot[charged], weights=frame["cost"].to_numpy()[charged],
                                  minlength=len(codes)),
            "los": np.bincount(slot, weights=frame["los"].to_numpy(dtype=np.float64),
                               minlength=len(codes)),
        }
        total = int(sums["cases"].sum())
        public: dict[str, Any] = {"k": ctx.min_cell_size, "codes": len(codes),
                                  "cases": total if ctx.release_site_counts
                                  and total >= ctx.min_cell_size else None}
        return Summable(public, sums, frozenset({"cases", "charged"}))

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        """In clear: the node's own cells under k are zeroed (and counted) before sending."""
        part = self.local_secure(ctx, params, round_input)
        k = ctx.min_cell_size
        small = (part.sums["cases"] > 0) & (part.sums["cases"] < k)
        sums = {label: np.where(small, 0, value) for label, value in part.sums.items()}
        public = {**part.public, "suppressed_cells": int(small.sum())}
        return clear_partial(Summable(public, sums, part.integer))

    def combine_secure(
        self, sums: Mapping[str, np.ndarray], publics: Mapping[str, dict[str, Any]],
        params: Params, state: dict[str, Any], round: int,
    ) -> Final | NextRound:
        assert isinstance(params, CasemixParams)
        if not publics:
            raise Refused("no node grouped any case")
        rules = params.grouping
        k = max(int(p.get("k", 10)) for p in publics.values())
        cases = np.asarray(sums["cases"], dtype=np.int64)
        charged = np.asarray(sums["charged"], dtype=np.int64)
        charge = np.asarray(sums["charge"], dtype=np.float64)
        los = np.asarray(sums["los"], dtype=np.float64)
        overall = float(charge.sum() / charged.sum()) if charged.sum() else None
        titles = {a.code: (a.title, a.mdc) for a in rules.adrg}
        groups = []
        for i, code in enumerate(rules.drg_codes()):
            n = int(cases[i])
            if n == 0:
                continue
            title, mdc = titles.get(code[:-1], ("Ungroupable", None))
            row: dict[str, Any] = {"drg": code, "adrg": code[:-1] if mdc else None, "mdc": mdc,
                                   "title": title}
            if n < k:
                row.update(cases=None, suppressed=True)
            else:
                mean = float(charge[i] / charged[i]) if charged[i] >= k else None
                row.update(cases=n, mean_los=float(los[i] / n), mean_charge=mean,
                           relative_weight=mean / overall if mean and overall else None)
            groups.append(row)
        shown = sum(g["cases"] or 0 for g in groups)
        return Final({
            "rules": {"name": rules.name, "version": rules.version, "official": rules.official},
            "cases": int(cases.sum()), "cases_in_shown_groups": shown,
            "mean_charge": overall, "groups": groups, "min_cell_size": k,
            "suppressed_cells_at_nodes": sum(int(p.get("suppressed_cells", 0))
                                             for p in publics.values()),
            "sites": {name: publics[name].get("cases") for name in sorted(publics)},
        })


register(Casemix())
