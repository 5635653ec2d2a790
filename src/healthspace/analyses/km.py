"""Exact federated Kaplan–Meier with the log-rank test, from merged per-time event counts.

Under secure aggregation it takes two rounds: the nodes first send their distinct (coarsened)
times in clear, then their event and censoring counts on the network timeline, masked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from healthspace.analyses.base import (
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
    Summable,
    plain,
)
from healthspace.analyses.registry import register
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.survival import coarsen_times

TABLE = "analysis_data"
ALPHA = 0.05


class KmParams(Params):
    duration: str
    event: str
    group: str | None = None


def survival_outcome(data: pd.DataFrame, duration: str, event: str) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Validated durations (finite, ≥ 0) and 0/1 events of rows already free of missing values;
    errors name ``params.duration`` / ``params.event``. Shared with the Cox model."""
    column = data[duration]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise InvalidInput(f"duration column {duration!r} must be numeric",
                           field="params.duration")
    times = np.asarray(column, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        raise InvalidInput("durations must be finite", field="params.duration")
    if np.any(times < 0):
        raise InvalidInput("durations must be non-negative", field="params.duration")
    flag = data[event]
    if not (pd.api.types.is_numeric_dtype(flag) or pd.api.types.is_bool_dtype(flag)):
        raise InvalidInput(f"event column {event!r} must be 0/1", field="params.event")
    events = np.asarray(flag, dtype=np.float64)
    if not np.all((events == 0) | (events == 1)):
        raise InvalidInput(f"event column {event!r} must be 0/1", field="params.event")
    return times, events.astype(np.int64)


def _load(ctx: LocalContext, params: KmParams) -> pd.DataFrame:
    """The used columns of ``analysis_data``, validated; rows with a missing value dropped."""
    data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
    used = {"duration": params.duration, "event": params.event}
    if params.group is not None:
        used["group"] = params.group
    for key, col in used.items():
        if col not in data.columns:
            raise InvalidInput(f"unknown column {col!r}", field=f"params.{key}")
    data = data[list(dict.fromkeys(used.values()))].dropna().reset_index(drop=True)
    times, events = survival_outcome(data, params.duration, params.event)
    out = pd.DataFrame({"t": times, "e": events})
    if params.group is not None:
        out["g"] = [plain(v) for v in data[params.group]]
    return out


def _tally(frame: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per distinct time: events d and censorings c, and how many rows were coarsened.

    Times are first coarsened by the survival disclosure unit, so every released time has at
    least ``k`` persons at risk here.
    """
    rule = coarsen_times(frame["t"].to_numpy(), k)
    times, inverse = np.unique(rule.times, return_inverse=True)
    d = np.zeros(len(times), dtype=np.int64)
    c = np.zeros(len(times), dtype=np.int64)
    e = frame["e"].to_numpy()
    np.add.at(d, inverse, e)
    np.add.at(c, inverse, 1 - e)
    return times.astype(np.float64), d, c, rule.moved


def _counts(frame: pd.DataFrame, k: int) -> dict[str, Any]:
    """The tally exactly encoded, plus the row count n and ``coarsened`` (rows moved)."""
    times, d, c, moved = _tally(frame, k)
    return {"n": len(frame), "times": encode_array(times), "d": encode_array(d),
            "c": encode_array(c), "coarsened": moved}


def _on_timeline(timeline: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-time counts moved onto the network timeline, which must hold every local time."""
    if not np.all(np.isin(times, timeline)):
        raise InvalidInput("the round input's timeline lacks times of this node",
                           field="round_input")
    out = np.zeros(len(timeline), dtype=np.int64)
    out[np.searchsorted(timeline, times)] = values
    return out


def _merge(parts: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sum per-time counts over sites; the timeline gains 0, as lifelines' does."""
    times = np.concatenate([decode_array(p["times"]) for p in parts] + [np.zeros(1)])
    d_all = np.concatenate([decode_array(p["d"]) for p in parts] + [np.zeros(1, np.int64)])
    c_all = np.concatenate([decode_array(p["c"]) for p in parts] + [np.zeros(1, np.int64)])
    timeline, inverse = np.unique(times, return_inverse=True)
    d = np.zeros(len(timeline), dtype=np.int64)
    c = np.zeros(len(timeline), dtype=np.int64)
    np.add.at(d, inverse, d_all)
    np.add.at(c, inverse, c_all)
    return timeline, d, c, sum(int(p["n"]) for p in parts)


def _at_risk(d: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
    removed = d + c
    return n - np.concatenate([[0], np.cumsum(removed)[:-1]]).astype(np.int64)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def _curve(timeline: np.ndarray, d: np.ndarray, c: np.ndarray, n: int) -> dict[str, Any]:
    """Product-limit estimate, exponential-Greenwood log(-log) CI and median, as lifelines."""
    at_risk = _at_risk(d, c, n)
    pop = at_risk.astype(np.float64)
    deaths = d.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.log(pop - deaths) - np.log(pop))
        var_terms = deaths / (pop * (pop - deaths))
        var_terms[np.isinf(var_terms)] = 0.0
        cum_sq = np.cumsum(var_terms)
        survival = np.exp(log_s)
        z = stats.norm.ppf(1 - ALPHA / 2)
        v = np.log(survival)
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(cum_sq) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(cum_sq) / v))
    lower[np.isnan(lower)] = 1.0
    upper[np.isnan(upper)] = 1.0
    below = np.nonzero(survival <= 0.5)[0]
    median = float(timeline[below[0]]) if len(below) else None
    return {"timeline": timeline.tolist(), "survival": _nan_to_none(survival),
            "ci_lower": _nan_to_none(lower), "ci_upper": _nan_to_none(upper),
            "at_risk": [int(a) for a in at_risk], "median": median}


def _logrank(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]) -> tuple[float, float]:
    """Multivariate log-rank statistic and p-value (lifelines' formula, unweighted)."""
    timeline = np.unique(np.concatenate([g[0] for g in groups]))
    k = len(groups)
    n_ij = np.zeros((len(timeline), k))
    d_ij = np.zeros((len(timeline), k))
    for j, (times, d, c, n) in enumerate(groups):
        idx = np.searchsorted(timeline, times)
        dd = np.zeros(len(timeline))
        cc = np.zeros(len(timeline))
        dd[idx] = d
        cc[idx] = c
        d_ij[:, j] = dd
        n_ij[:, j] = _at_risk(dd, cc, n)
    n_i = n_ij.sum(axis=1)
    d_i = d_ij.sum(axis=1)
    live = n_i > 0
    n_ij, d_ij, n_i, d_i = n_ij[live], d_ij[live], n_i[live], d_i[live]
    expected = n_ij * (d_i / n_i)[:, None]
    z_j = d_ij.sum(axis=0) - expected.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = (n_i - d_i) / (n_i - 1)
    factor[~np.isfinite(factor)] = 1.0
    factor = factor * d_i / n_i**2
    cov = -(n_ij * factor[:, None]).T @ n_ij
    cov[np.diag_indices(k)] += (n_ij * (n_i * factor)[:, None]).sum(axis=0)
    sub = cov[:-1, :-1]
    statistic = float(z_j[:-1] @ np.linalg.pinv(sub) @ z_j[:-1])
    return statistic, float(stats.chi2.sf(statistic, k - 1))


class KaplanMeier(Analysis):
    name = "km"
    title = "Kaplan–Meier survival with the log-rank test (exact pooled)"
    params_model = KmParams
    requires_cohort = False
    uses_table = True
    max_rounds = 2  # the plain protocol needs one; secure aggregation agrees a timeline first
    secure = True

    @staticmethod
    def _parts(ctx: LocalContext, params: KmParams) -> list[tuple[Any, pd.DataFrame]]:
        """The rows per released part: ``("all", rows)``, or ``(value, rows)`` per group;
        refuses a site or group below the minimum cell size."""
        frame = _load(ctx, params)
        ctx.records_used = len(frame)
        if len(frame) < ctx.min_cell_size:
            raise Refused(f"only {len(frame)} usable rows, below the minimum cell size "
                          f"{ctx.min_cell_size}; the Kaplan–Meier estimate is refused")
        if params.group is None:
            return [("all", frame)]
        parts: list[tuple[Any, pd.DataFrame]] = []
        for value, part in frame.groupby("g", sort=True):
            if len(part) < ctx.min_cell_size:
                raise Refused(f"group {value!s} has only {len(part)} rows, below the minimum "
                              f"cell size {ctx.min_cell_size}; the Kaplan–Meier estimate is "
                              f"refused")
            parts.append((plain(value), part))
        return parts

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, KmParams)
        parts = self._parts(ctx, params)
        k = ctx.min_cell_size
        if params.group is None:
            return {"all": _counts(parts[0][1], k)}
        return {"groups": [{"value": value, **_counts(part, k)} for value, part in parts]}

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, KmParams)
        if not partials:
            raise Refused("no site took part in the Kaplan–Meier estimate")
        names = sorted(partials)
        if params.group is None:
            timeline, d, c, n = _merge([partials[s]["all"] for s in names])
            result = _curve(timeline, d, c, n)
            result["sites"] = {s: int(partials[s]["all"]["n"]) for s in names}
            result["coarsened"] = {s: int(partials[s]["all"].get("coarsened", 0)) for s in names}
            return Final(result)
        by_group: dict[str, list[dict[str, Any]]] = {}
        for s in names:
            for part in partials[s]["groups"]:
                by_group.setdefault(str(part["value"]), []).append(part)
        merged = {key: _merge(parts) for key, parts in sorted(by_group.items())}
        curves = {key: _curve(*m) for key, m in merged.items()}
        statistic: float | None = None
        p_value: float | None = None
        if len(merged) >= 2:
            statistic, p_value = _logrank(list(merged.values()))

        def total(site: str, key: str) -> int:
            return sum(int(part.get(key, 0)) for part in partials[site]["groups"])

        return Final({"groups": curves, "logrank_p": p_value, "logrank_statistic": statistic,
                      "sites": {s: total(s, "n") for s in names},
                      "coarsened": {s: total(s, "coarsened") for s in names}})

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        """Round 1: the distinct coarsened times per part (and so the group values) in clear,
        the row and coarsened counts masked. Round 2: events and censorings on the network
        timeline of every part, masked (zeros for a group this node lacks)."""
        assert isinstance(params, KmParams)
        parts = self._parts(ctx, params)
        tallies = {str(value): _tally(part, ctx.min_cell_size) for value, part in parts}
        if round_input is None:
            return Summable({"times": {key: encode_array(t[0]) for key, t in tallies.items()}},
                            {"n": np.asarray([sum(len(part) for _, part in parts)]),
                             "coarsened": np.asarray([sum(t[3] for t in tallies.values())])},
                            frozenset({"n", "coarsened"}))
        timelines = round_input["timelines"]
        if not set(tallies) <= set(timelines):
            raise InvalidInput("the round input lacks groups of this node", field="round_input")
        d: list[np.ndarray] = []
        c: list[np.ndarray] = []
        for key in sorted(timelines):  # the hub splits the sums in the same order
            timeline = decode_array(timelines[key])
            if key in tallies:
                times, dk, ck, _ = tallies[key]
                d.append(_on_timeline(timeline, times, dk))
                c.append(_on_timeline(timeline, times, ck))
            else:
                d.append(np.zeros(len(timeline), dtype=np.int64))
                c.append(np.zeros(len(timeline), dtype=np.int64))
        return Summable({}, {"d": np.concatenate(d), "c": np.concatenate(c)},
                        frozenset({"d", "c"}))

    def combine_secure(
        self,
        sums: Mapping[str, np.ndarray],
        publics: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        """Round 1 agrees the union timeline of every part; round 2 combines the network
        counts as one pooled site. Per-site row and coarsened counts are not released."""
        assert isinstance(params, KmParams)
        names = sorted(publics)
        if round == 1:
            union: dict[str, list[np.ndarray]] = {}
            for name in names:
                for key, times in publics[name]["times"].items():
                    union.setdefault(key, []).append(decode_array(times))
            timelines = {key: encode_array(np.unique(np.concatenate(parts)))
                         for key, parts in union.items()}
            return NextRound({"timelines": timelines},
                             {"names": names, "timelines": timelines,
                              "nobs": int(sums["n"][0]),
                              "coarsened_total": int(sums["coarsened"][0])})
        if names != state["names"]:
            raise Refused(f"sites changed between rounds ({', '.join(names)}); the timeline "
                          f"was agreed by {', '.join(state['names'])}")
        parts: list[dict[str, Any]] = []
        start = 0
        for key in sorted(state["timelines"]):
            encoded = state["timelines"][key]
            stop = start + int(decode_array(encoded).size)
            d, c = sums["d"][start:stop], sums["c"][start:stop]
            parts.append({"value": key, "times": encoded, "d": encode_array(d),
                          "c": encode_array(c), "n": int(d.sum() + c.sum())})
            start = stop
        pooled = {"all": parts[0]} if params.group is None else {"groups": parts}
        outcome = self.combine({"network": pooled}, params, state, round)
        assert isinstance(outcome, Final)
        return Final({**outcome.result, "sites": dict.fromkeys(names),
                      "coarsened": dict.fromkeys(names), "nobs": state["nobs"],
                      "coarsened_total": state["coarsened_total"], "secure_aggregation": True})


register(KaplanMeier())
