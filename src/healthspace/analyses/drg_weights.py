"""Federated DRG weights: per group cases, mean / median / CV of charge and length of stay,
outlier trimming, and relative weights — from every hospital's cases, never pooled.

Round 1: each node sends, per DRG of the rule file, counts and the sums and sums of squares
of charge and length of stay, and fine histograms of both (charge on ``charge_bins``
log-spaced bins over [1, 10^7], length of stay in whole days 0..365). ``combine`` reads each
group's median and quartiles from the merged histograms and fixes its trimming bounds: IQR
(``[Q1 − f·IQR, Q3 + f·IQR]``, f = ``iqr_factor``) or 3 SD (mean ± 3 SD, from the sums).
Round 2: each node sums, per group, the cases and charges inside the bounds, so trimmed means
and CVs are exact given the bounds. Round 3: each node places itself against the network —
its case-mix index (mean relative weight of its cases), cost index (its charges over the
network mean charges of the same DRGs) and length-of-stay index — and that position is
delivered only to the node's organisation and to payer organisations (``Final.deliveries``),
never in the shared result; the node also keeps it in its own state. All vectors have fixed
length: under secure aggregation the hub decodes only network totals.

A q-quantile here is the ⌈q·n⌉-th smallest value (the lower median for q = ½): for charges
it is read within its log bin, so it lies within a factor ``10^(7/charge_bins)`` of the
pooled order statistic (1.6 % for 1,000 bins); for whole-day lengths of stay it is exact.
The result states the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from healthspace.analyses.base import Final, LocalContext, NextRound, Params, Summable
from healthspace.analyses.casemix import CasemixParams, node_cases
from healthspace.analyses.registry import register
from healthspace.analyses.secure import SummedAnalysis
from healthspace.core.errors import InvalidInput, Refused

LOS_DAYS = 366  # 0..365; longer stays fall in the last bin
CHARGE_DECADES = 7.0  # histogram over [1, 10^7]
_INTEGER = frozenset({"cases", "charged", "charge_hist", "los_hist", "kept"})


class WeightsParams(CasemixParams):
    trim: Literal["iqr", "3sd", "none"] = "iqr"
    iqr_factor: float = Field(default=1.5, gt=0, le=10)
    charge_bins: int = Field(default=1000, ge=50, le=5000)


def _edges(bins: int) -> np.ndarray:
    return np.logspace(0.0, CHARGE_DECADES, bins + 1)


def _quantile(hist: np.ndarray, q: float, edges: np.ndarray | None) -> float | None:
    """The q-quantile from a histogram: interpolated geometrically within a log-spaced bin;
    for whole days, the day that holds it."""
    total = float(hist.sum())
    if total <= 0:
        return None
    target = q * total
    cum = np.cumsum(hist)
    b = int(np.searchsorted(cum, target, side="left"))
    below = float(cum[b - 1]) if b else 0.0
    frac = (target - below) / float(hist[b]) if hist[b] else 0.0
    if edges is None:
        return float(b)  # whole days: the day holding the quantile
    lo, hi = edges[b], edges[b + 1]
    return float(lo * (hi / lo) ** frac)


class DrgWeights(SummedAnalysis):
    name = "drg_weights"
    title = "DRG weights: trimmed mean, median and CV of charge and stay; relative weights"
    params_model = WeightsParams
    requires_cohort = False
    max_rounds = 3

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        assert isinstance(params, WeightsParams)
        codes = params.grouping.drg_codes()
        frame, slot = node_cases(ctx, params.grouping)
        cost = frame["cost"].to_numpy(dtype=np.float64, na_value=np.nan)
        charged = ~np.isnan(cost)
        los = frame["los"].to_numpy(dtype=np.float64)
        d = len(codes)
        public = {"k": ctx.min_cell_size}
        if round_input is not None and round_input.get("weights") is not None:
            return self._position(ctx, frame, slot, cost, los, round_input, d)
        if round_input is None:
            bins = params.charge_bins
            cbin = np.clip(np.searchsorted(_edges(bins), np.maximum(cost[charged], 1.0),
                                           side="right") - 1, 0, bins - 1)
            lbin = np.minimum(los.astype(np.int64), LOS_DAYS - 1)
            sums = {
                "cases": np.bincount(slot, minlength=d),
                "charged": np.bincount(slot[charged], minlength=d),
                "charge": np.bincount(slot[charged], weights=cost[charged], minlength=d),
                "charge_sq": np.bincount(slot[charged], weights=cost[charged] ** 2,
                                         minlength=d),
                "los": np.bincount(slot, weights=los, minlength=d),
                "los_sq": np.bincount(slot, weights=los ** 2, minlength=d),
                "charge_hist": np.bincount(slot[charged] * bins + cbin,
                                           minlength=d * bins),
                "los_hist": np.bincount(slot * LOS_DAYS + lbin, minlength=d * LOS_DAYS),
            }
        else:
            lo = np.asarray(round_input["lower"], dtype=np.float64)
            hi = np.asarray(round_input["upper"], dtype=np.float64)
            keep = charged.copy()
            keep[charged] = (cost[charged] >= lo[slot[charged]]) & \
                (cost[charged] <= hi[slot[charged]])
            sums = {
                "kept": np.bincount(slot[keep], minlength=d),
                "kept_charge": np.bincount(slot[keep], weights=cost[keep], minlength=d),
                "kept_charge_sq": np.bincount(slot[keep], weights=cost[keep] ** 2,
                                              minlength=d),
                "kept_los": np.bincount(slot[keep], weights=los[keep], minlength=d),
            }
        sums = {label: np.asarray(value, dtype=np.int64 if label in _INTEGER else np.float64)
                for label, value in sums.items()}
        return Summable(public, sums, _INTEGER & frozenset(sums))

    def combine_secure(
        self, sums: Mapping[str, np.ndarray], publics: Mapping[str, dict[str, Any]],
        params: Params, state: dict[str, Any], round: int,
    ) -> Final | NextRound:
        assert isinstance(params, WeightsParams)
        if not publics:
            raise Refused("no node grouped any case")
        codes = params.grouping.drg_codes()
        d, bins = len(codes), params.charge_bins
        if round == 1:
            return self._bounds(sums, params, d, bins, publics)
        if round == 2:
            result = self._result(sums, params, state, codes)
            index = {code: i for i, code in enumerate(codes)}
            weights, charge, stay = (np.full(d, np.nan) for _ in range(3))
            for g in result["groups"]:
                if not g.get("suppressed"):
                    i = index[g["drg"]]
                    weights[i], charge[i], stay[i] = (g["relative_weight"], g["mean_charge"],
                                                      g["mean_los"])
            plain = [[None if math.isnan(x) else float(x) for x in v]
                     for v in (weights, charge, stay)]
            return NextRound({"weights": plain[0], "mean_charge": plain[1],
                              "mean_los": plain[2]}, {"result": result})
        result = dict(state["result"])
        deliveries = {node: dict(p["position"]) for node, p in publics.items()
                      if p.get("position") is not None}
        result["positions"] = {
            "delivered_to": "each hospital's own organisation and payer organisations",
            "nodes": len(deliveries),
            "definition": "case-mix index = mean relative weight of the hospital's cases in "
                          "released DRGs; cost index = its charges / the network mean "
                          "charges of the same DRGs; LOS index likewise for stay",
        }
        return Final(result, deliveries=deliveries)

    def _position(self, ctx: LocalContext, frame: Any, slot: np.ndarray, cost: np.ndarray,
                  los: np.ndarray, round_input: dict[str, Any], d: int) -> Summable:
        """This node against the network: CMI, cost and LOS indices over its cases in
        released DRGs (public to the hub, delivered to this node's organisation only)."""
        def vector(name: str) -> np.ndarray:
            values = round_input.get(name)
            if not isinstance(values, list) or len(values) != d:
                raise InvalidInput(f"{name} must list {d} values", field=f"round_input.{name}")
            return np.asarray([np.nan if v is None else float(v) for v in values])

        weight, charge, stay = vector("weights"), vector("mean_charge"), vector("mean_los")
        known = ~np.isnan(weight[slot])
        charged = known & ~np.isnan(cost)
        n, k = int(known.sum()), ctx.min_cell_size
        hospital = sorted({str(h) for h in frame["hospital"]}) if len(frame) else []
        position: dict[str, Any] = {"site": ctx.site, "hospitals": hospital,
                                    "cases": int(len(frame)), "weighted_cases": n,
                                    "min_cell_size": k}
        if n < k:
            position.update(suppressed=True, cmi=None, cost_index=None, los_index=None)
        else:
            expected = float(charge[slot[charged]].sum())
            position.update(
                suppressed=False, cmi=float(weight[slot[known]].mean()),
                cost_index=float(cost[charged].sum()) / expected if expected else None,
                los_index=float(los[known].sum()) / float(stay[slot[known]].sum())
                if float(stay[slot[known]].sum()) else None,
                total_weight=float(weight[slot[known]].sum()),
                mean_charge=float(cost[charged].mean()) if charged.any() else None)
        if ctx.findings_sink is not None:
            ctx.findings_sink("drg_position", [position])
        counted = np.asarray([len(frame)], dtype=np.int64)
        return Summable({"k": k, "position": position}, {"cases_total": counted},
                        frozenset({"cases_total"}))

    def _bounds(self, sums: Mapping[str, np.ndarray], params: WeightsParams, d: int, bins: int,
                publics: Mapping[str, dict[str, Any]]) -> NextRound:
        charge_hist = np.asarray(sums["charge_hist"]).reshape(d, bins)
        los_hist = np.asarray(sums["los_hist"]).reshape(d, LOS_DAYS)
        edges = _edges(bins)
        charged = np.asarray(sums["charged"], dtype=np.float64)
        groups = []
        lower, upper = np.full(d, -math.inf), np.full(d, math.inf)
        for i in range(d):
            q1, med, q3 = (_quantile(charge_hist[i], q, edges) for q in (0.25, 0.5, 0.75))
            mean = float(sums["charge"][i] / charged[i]) if charged[i] else None
            var = (float(sums["charge_sq"][i]) - charged[i] * mean ** 2) / (charged[i] - 1) \
                if mean is not None and charged[i] > 1 else None
            sd = math.sqrt(max(var, 0.0)) if var is not None else None
            if params.trim == "iqr" and q1 is not None and q3 is not None:
                spread = q3 - q1
                lower[i] = q1 - params.iqr_factor * spread
                upper[i] = q3 + params.iqr_factor * spread
            elif params.trim == "3sd" and mean is not None and sd is not None:
                lower[i], upper[i] = mean - 3 * sd, mean + 3 * sd
            n = int(sums["cases"][i])
            groups.append({"cases": n, "mean": mean, "sd": sd, "median": med,
                           "los_median": _quantile(los_hist[i], 0.5, None),
                           "los_mean": float(sums["los"][i]) / n if n else None})
        # the state is stored as JSON, which has no infinities: an open bound is None
        state = {"groups": groups,
                 "lower": [x if math.isfinite(x) else None for x in lower.tolist()],
                 "upper": [x if math.isfinite(x) else None for x in upper.tolist()],
                 "k": max(int(p.get("k", 10)) for p in publics.values())}
        bounded = [float(x) if math.isfinite(x) else (-1e300 if x < 0 else 1e300)
                   for x in (*lower, *upper)]
        return NextRound({"lower": bounded[:d], "upper": bounded[d:]}, state)

    def _result(self, sums: Mapping[str, np.ndarray], params: WeightsParams,
                state: dict[str, Any], codes: list[str]) -> dict[str, Any]:
        rules = params.grouping
        k = int(state["k"])
        kept = np.asarray(sums["kept"], dtype=np.float64)
        kept_charge = np.asarray(sums["kept_charge"], dtype=np.float64)
        if kept.sum() <= 0:
            raise InvalidInput("no case with a charge to weigh", field="params.rules")
        overall = float(kept_charge.sum() / kept.sum())
        titles = {a.code: (a.title, a.mdc) for a in rules.adrg}
        rows = []
        for i, code in enumerate(codes):
            first = state["groups"][i]
            if first["cases"] == 0:
                continue
            title, mdc = titles.get(code[:-1], ("Ungroupable", None))
            row: dict[str, Any] = {"drg": code, "mdc": mdc, "title": title}
            if first["cases"] < k or kept[i] < k:
                row.update(cases=None, suppressed=True)
                rows.append(row)
                continue
            mean = float(kept_charge[i] / kept[i])
            var = (float(sums["kept_charge_sq"][i]) - kept[i] * mean ** 2) / max(kept[i] - 1, 1)
            lo, hi = state["lower"][i], state["upper"][i]
            row.update(
                cases=first["cases"], trimmed_cases=int(kept[i]),
                trim_bounds=[lo if lo is not None and math.isfinite(lo) else None,
                             hi if hi is not None and math.isfinite(hi) else None],
                mean_charge=mean, median_charge=first["median"],
                cv_charge=math.sqrt(max(var, 0.0)) / mean if mean else None,
                untrimmed_mean_charge=first["mean"],
                mean_los=float(sums["kept_los"][i] / kept[i]),
                median_los=first["los_median"], relative_weight=mean / overall,
            )
            rows.append(row)
        return {
            "rules": {"name": rules.name, "version": rules.version, "official": rules.official},
            "trim": params.trim, "iqr_factor": params.iqr_factor if params.trim == "iqr" else None,
            "overall_mean_charge": overall, "groups": rows, "min_cell_size": k,
            "tolerance": {"quantile_charge_relative": float(10 ** (CHARGE_DECADES /
                                                                    params.charge_bins) - 1),
                          "quantile_los_days": 0.0,
                          "quantile": "the ceil(q*n)-th smallest value (lower median)",
                          "note": "medians and IQR bounds come from merged histograms"},
        }


register(DrgWeights())
