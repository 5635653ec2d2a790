"""Descriptive statistics and cross-tabs: exact pooled mean/SD, banded extremes, bounded quantiles.

Two rounds. Round 1: per stratum each node releases its row count, for every numeric variable
with at least ``k`` values n, missing, mean, the sum of squared deviations and banded extremes,
and for every categorical column the names of levels held by at least ``k`` persons. The hub
pools the moments exactly (Chan et al.), unions the levels and fixes a common fine grid per
numeric variable. Round 2: nodes release frequency tables and cross-tabs over the common levels
(small-cell and complementary suppression) and histograms on the grid with adjacent bins merged
to ``>= k`` persons; the hub sums them and brackets every quantile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.registry import register
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.bands import (
    band_max,
    band_min,
    histogram_quantiles,
    merge_bins,
    pool_cell,
    release_crosstab,
    released_room,
)
from healthspace.privacy.disclosure import Released, release_table

TABLE = "analysis_data"
ALL = "all"
OTHER = "(other)"
MISSING = "(missing)"
BINS = 1000  # fine histogram bins per numeric variable (before merging on the node)

NOTES = {
    "counts": "A pooled count with exact=false includes a cell some site suppressed ('<k') or "
              "a stratum it withheld: 'count' sums the released cells (a lower bound) and "
              "'upper' adds, per such site, the most its hidden cell can hold (its released "
              "line total minus its released cells; k-1 for a withheld stratum). Percentages "
              "are given only when the cell and the stratum total are exact.",
    "quantiles": "Quantiles (numpy's default, linear) are interpolated from the sites' merged "
                 "histograms; the exact pooled quantile lies in [lower, upper] and error_bound "
                 "= upper - lower, the width of the released bin that holds it.",
    "extremes": "The pooled minimum lies in [min_band[0], min_band[1]) and the maximum in "
                "(max_band[0], max_band[1]]; every site's band holds at least k values.",
}


# Bounds that no real summary meets and that keep a request small to validate and run.
MAX_VARIABLES = 200


class SummaryParams(Params):
    variables: list[str] = Field(max_length=MAX_VARIABLES)
    categorical: list[str] = Field(default=[], max_length=MAX_VARIABLES)
    by: str | None = None
    crosstabs: list[tuple[str, str]] = Field(default=[], max_length=MAX_VARIABLES)
    quantiles: list[float] = Field(default=[0.25, 0.5, 0.75], max_length=99)

    @field_validator("quantiles")
    @classmethod
    def _open_unit_interval(cls, values: list[float]) -> list[float]:
        for q in values:
            if not 0.0 < q < 1.0:
                raise ValueError(f"quantile {q} is not strictly between 0 and 1")
        return values

    def summarised(self) -> list[str]:
        """The variables, then categorical names not already listed, without repeats."""
        return list(dict.fromkeys([*self.variables, *self.categorical]))

    def crosstab_columns(self) -> list[str]:
        return list(dict.fromkeys(col for pair in self.crosstabs for col in pair))


def _label(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return MISSING
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sort_levels(levels: Iterable[str]) -> list[str]:
    def key(level: str) -> tuple[int, float, str]:
        try:
            return (0, float(level), level)
        except ValueError:
            return (1, 0.0, level)
    return sorted(set(levels), key=key)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _load(ctx: LocalContext, params: SummaryParams) -> pd.DataFrame:
    try:
        data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
    except duckdb.CatalogException:
        raise InvalidInput(f"this site has no table {TABLE!r}", field="table") from None
    named = [("variables", params.variables), ("categorical", params.categorical),
             ("by", [params.by] if params.by else []),
             ("crosstabs", params.crosstab_columns())]
    for key, cols in named:
        for col in cols:
            if col not in data.columns:
                raise InvalidInput(f"unknown column {col!r}", field=f"params.{key}")
    for col in params.summarised():
        if col not in params.categorical and _is_numeric(data[col]):
            values = data[col].to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isinf(values).any():
                raise InvalidInput(f"column {col!r} holds infinite values",
                                   field="params.variables")
    return data


def _kind(series: pd.Series, forced: bool) -> str:
    if forced:
        return "categorical"
    if series.notna().sum() == 0:
        return "empty"
    return "numeric" if _is_numeric(series) else "categorical"


def _strata(data: pd.DataFrame, params: SummaryParams, k: int) -> dict[str, pd.DataFrame]:
    """The site's strata with at least ``k`` rows (all rows when there is no ``by``)."""
    if params.by is None:
        return {ALL: data}
    labels = data[params.by].map(_label)
    return {str(level): part for level, part in data.groupby(labels, sort=True)
            if len(part) >= k}


def _moments(values: np.ndarray, k: int) -> dict[str, Any]:
    n = len(values)
    if n < k:
        return {"withheld": f"fewer than {k} non-missing values"}
    mean = math.fsum(values) / n
    dev = values - mean
    m2 = math.fsum(dev * dev) - math.fsum(dev) ** 2 / n
    return {"n": n, "mean": mean, "m2": max(m2, 0.0),
            "min_band": list(band_min(values, k)), "max_band": list(band_max(values, k))}


def _numeric_values(part: pd.DataFrame, col: str) -> np.ndarray:
    values = part[col].to_numpy(dtype=np.float64, na_value=np.nan)
    return values[~np.isnan(values)]


def _round1(data: pd.DataFrame, params: SummaryParams, k: int) -> dict[str, Any]:
    kinds = {v: _kind(data[v], v in params.categorical) for v in params.summarised()}
    numeric = [v for v, kind in kinds.items() if kind in ("numeric", "empty")]
    level_cols = [v for v, kind in kinds.items() if kind in ("categorical", "empty")]
    level_cols = list(dict.fromkeys([*level_cols, *params.crosstab_columns()]))
    strata: dict[str, Any] = {}
    for name, part in _strata(data, params, k).items():
        stats: dict[str, Any] = {}
        for v in numeric:
            values = _numeric_values(part, v)
            stats[v] = {**_moments(values, k), "missing": len(part) - len(values)}
            if "withheld" in stats[v]:
                del stats[v]["missing"]
        strata[name] = {"n": len(part), "numeric": stats}
    levels = {}
    for col in level_cols:
        counts = data[col].map(_label).value_counts()
        levels[col] = _sort_levels(str(lv) for lv, n in counts.items() if n >= k and lv != MISSING)
    return {"min_cell_size": k, "kinds": kinds, "strata": strata, "levels": levels}


def _grid_labels(series: pd.Series, levels: list[str]) -> pd.Series:
    known = set(levels)
    return series.map(_label).map(lambda lv: lv if lv in known or lv == MISSING else OTHER)


def _round2(data: pd.DataFrame, params: SummaryParams, k: int,
            plan: dict[str, Any]) -> dict[str, Any]:
    levels: dict[str, list[str]] = plan["levels"]
    grid = {col: [*lv, OTHER, MISSING] for col, lv in levels.items()}
    strata: dict[str, Any] = {}
    for name, part in _strata(data, params, k).items():
        if name not in plan["strata"]:
            continue
        tables = {}
        for col in plan["categorical"]:
            counts = _grid_labels(part[col], levels[col]).value_counts()
            tables[col] = release_table({lv: int(counts.get(lv, 0)) for lv in grid[col]}, k)
        crosstabs = []
        for a, b in params.crosstabs:
            pairs = pd.crosstab(_grid_labels(part[a], levels[a]), _grid_labels(part[b], levels[b]))
            cells = {(r, c): int(pairs.at[r, c]) if r in pairs.index and c in pairs.columns else 0
                     for r in grid[a] for c in grid[b]}
            inner, rows, cols = release_crosstab(cells, k)
            crosstabs.append({"cells": [[r, c, v] for (r, c), v in inner.items()],
                              "rows": rows, "cols": cols})
        hists = {}
        for v, (lo, hi) in plan["grids"].get(name, {}).items():
            values = _numeric_values(part, v)
            if len(values) < k:
                continue
            edges = np.linspace(lo, hi, BINS + 1)
            idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, BINS - 1)
            hists[v] = [list(b) for b in merge_bins(np.bincount(idx, minlength=BINS), k)]
        strata[name] = {"tables": tables, "crosstabs": crosstabs, "hists": hists}
    return {"min_cell_size": k, "strata": strata}


# --- combine: pure functions over the partials ---------------------------------------------

def _chan(parts: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Merge (n, mean, M2) triples with Chan et al.'s parallel formula."""
    n, mean, m2 = 0, 0.0, 0.0
    for p in parts:
        nb, mb, m2b = int(p["n"]), float(p["mean"]), float(p["m2"])
        total = n + nb
        delta = mb - mean
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
    return n, mean, m2


def _merge_numeric(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    used = {s: p for s, p in sorted(stats.items()) if "withheld" not in p}
    out: dict[str, Any] = {"sites": sorted(used),
                           "withheld_sites": {s: p["withheld"] for s, p in sorted(stats.items())
                                              if "withheld" in p}}
    if not used:
        return {**out, "n": 0, "missing": None, "mean": None, "sd": None, "min_band": None,
                "max_band": None}
    n, mean, m2 = _chan(list(used.values()))
    lows = [p["min_band"] for p in used.values()]
    highs = [p["max_band"] for p in used.values()]
    return {**out, "n": n, "missing": sum(int(p["missing"]) for p in used.values()),
            "mean": mean, "sd": math.sqrt(m2 / (n - 1)) if n > 1 else None,
            "min_band": [min(b[0] for b in lows), min(b[1] for b in lows)],
            "max_band": [max(b[0] for b in highs), max(b[1] for b in highs)]}


def _with_percent(cell: dict[str, Any], total: dict[str, Any]) -> dict[str, Any]:
    ok = cell["exact"] and total["exact"] and total["count"] > 0
    return {**cell, "percent": 100.0 * cell["count"] / total["count"] if ok else None}


def _plan(partials: Mapping[str, dict[str, Any]], params: SummaryParams) -> dict[str, Any]:
    """Round 1 at the hub: variable kinds, pooled moments, common levels, strata and grids."""
    kinds: dict[str, str] = {}
    for v in params.summarised():
        seen = {partials[s]["kinds"][v] for s in partials} - {"empty"}
        if len(seen) > 1:
            raise InvalidInput(f"column {v!r} is numeric at some sites and not at others; "
                               f"list it in 'categorical'", field="params.categorical")
        kinds[v] = seen.pop() if seen else "numeric"
    strata = _sort_levels(st for p in partials.values() for st in p["strata"])
    numeric_vars = [v for v, kind in kinds.items() if kind == "numeric"]
    categorical = [v for v, kind in kinds.items() if kind == "categorical"]
    level_cols = list(dict.fromkeys([*categorical, *params.crosstab_columns()]))
    levels = {c: _sort_levels(lv for p in partials.values() for lv in p["levels"].get(c, []))
              for c in level_cols}
    numeric: dict[str, dict[str, Any]] = {}
    grids: dict[str, dict[str, list[float]]] = {}
    for st in strata:
        numeric[st] = {}
        for v in numeric_vars:
            merged = _merge_numeric({s: p["strata"][st]["numeric"][v]
                                     for s, p in partials.items() if st in p["strata"]})
            numeric[st][v] = merged
            if merged["n"] and params.quantiles:
                lo, hi = merged["min_band"][0], merged["max_band"][1]
                hi = hi if hi > lo else lo + (merged["min_band"][1] - lo)
                grids.setdefault(st, {})[v] = [lo, hi]
    return {"strata": strata, "categorical": categorical, "levels": levels, "grids": grids,
            "numeric": numeric, "kinds": kinds,
            "k": {s: int(p["min_cell_size"]) for s, p in sorted(partials.items())},
            "rows": {s: {st: int(v["n"]) for st, v in p["strata"].items()}
                     for s, p in sorted(partials.items())}}


def _pool_table(parts: Mapping[str, Mapping[str, Released] | None], keys: list[str],
                sizes: Mapping[str, int | None], k: Mapping[str, int],
                total: dict[str, Any]) -> list[dict[str, Any]]:
    """Pool a one-way table; ``sizes`` is each site's stratum size (None: withheld)."""
    def room(s: str, t: Mapping[str, Released] | None) -> int:
        size = sizes[s]
        return k[s] - 1 if t is None or size is None else released_room(t.values(), size)

    rooms = {s: room(s, t) for s, t in parts.items()}
    return [{"level": key, **_with_percent(pool_cell(
        {s: (None if t is None else t[key], rooms[s]) for s, t in parts.items()}), total)}
        for key in keys]


def _pool_crosstab(tabs: Mapping[str, dict[str, Any] | None], rows: list[str], cols: list[str],
                   sizes: Mapping[str, int | None], k: Mapping[str, int],
                   total: dict[str, Any]) -> dict[str, Any]:
    cells = {s: ({(r, c): v for r, c, v in t["cells"]} if t else None) for s, t in tabs.items()}

    def room(s: str, r: str, c: str) -> int:
        t, grid, size = tabs[s], cells[s], sizes[s]
        if t is None or grid is None or size is None:
            return k[s] - 1
        bounds = [released_room(grid.values(), size)]
        if isinstance(t["rows"][r], int):
            bounds.append(released_room([grid[(r, cc)] for cc in cols], t["rows"][r]))
        if isinstance(t["cols"][c], int):
            bounds.append(released_room([grid[(rr, c)] for rr in rows], t["cols"][c]))
        return min(bounds)

    return {
        "cells": [{"row": r, "col": c, **_with_percent(pool_cell(
            {s: (None if g is None else g[(r, c)], room(s, r, c)) for s, g in cells.items()}),
            total)} for r in rows for c in cols],
        "row_totals": _pool_table({s: t and t["rows"] for s, t in tabs.items()}, rows, sizes,
                                  k, total),
        "col_totals": _pool_table({s: t and t["cols"] for s, t in tabs.items()}, cols, sizes,
                                  k, total)}


def _finish(state: dict[str, Any], partials: Mapping[str, dict[str, Any]],
            params: SummaryParams) -> dict[str, Any]:
    k: dict[str, int] = state["k"]
    sites = sorted(k)
    strata_out: dict[str, Any] = {}
    for st in state["strata"]:
        got = {s: partials[s]["strata"].get(st) if s in partials else None for s in sites}
        sizes = {s: state["rows"][s].get(st) if got[s] else None for s in sites}
        total = pool_cell({s: (state["rows"][s].get(st), k[s] - 1) for s in sites})
        entry: dict[str, Any] = {
            "n": total, "withheld_sites": [s for s in sites if st not in state["rows"][s]],
            "numeric": {}, "categorical": {}, "crosstabs": []}
        for v, merged in state["numeric"][st].items():
            grid = state["grids"].get(st, {}).get(v)
            hists = [g["hists"][v] for g in got.values() if g and v in g["hists"]]
            quantiles = (histogram_quantiles(hists, grid[0], grid[1], BINS, params.quantiles)
                         if grid and hists else [])
            entry["numeric"][v] = {**merged, "quantiles": quantiles}
        for v in state["categorical"]:
            keys = [*state["levels"][v], OTHER, MISSING]
            parts = {s: (g["tables"][v] if g else None) for s, g in got.items()}
            entry["categorical"][v] = _pool_table(parts, keys, sizes, k, total)
        for i, (a, b) in enumerate(params.crosstabs):
            tabs = {s: (g["crosstabs"][i] if g else None) for s, g in got.items()}
            pooled = _pool_crosstab(tabs, [*state["levels"][a], OTHER, MISSING],
                                    [*state["levels"][b], OTHER, MISSING], sizes, k, total)
            entry["crosstabs"].append({"rows": a, "cols": b, **pooled})
        strata_out[st] = entry
    return {"by": params.by, "strata": strata_out, "sites": state["rows"],
            "min_cell_size": k, "kinds": state["kinds"], "notes": NOTES}


class Summary(Analysis):
    name = "summary"
    title = "Descriptive statistics and cross-tabs (disclosure-controlled, pooled)"
    params_model = SummaryParams
    requires_cohort = False
    uses_table = True
    max_rounds = 2

    def parse_params(self, raw: Mapping[str, Any] | None) -> Params:
        params = super().parse_params(raw)
        assert isinstance(params, SummaryParams)
        if not params.summarised() and not params.crosstabs:
            raise InvalidInput("name at least one variable (or a cross-tab)",
                               field="params.variables")
        for a, b in params.crosstabs:
            if a == b:
                raise InvalidInput(f"cross-tab of {a!r} with itself", field="params.crosstabs")
        return params

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, SummaryParams)
        data = _load(ctx, params)
        ctx.records_used = len(data)
        k = ctx.min_cell_size
        if len(data) < k:
            raise Refused(f"only {len(data)} rows, below the minimum cell size {k}; "
                          f"the summary is refused")
        if round_input is None:
            return _round1(data, params, k)
        return _round2(data, params, k, round_input)

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, SummaryParams)
        if not partials:
            raise Refused("no site took part in the summary")
        if round == 1:
            plan = _plan(partials, params)
            if not plan["categorical"] and not params.crosstabs and not plan["grids"]:
                return Final(_finish(plan, {}, params))
            ask = {key: plan[key] for key in ("strata", "categorical", "levels", "grids")}
            return NextRound(ask, plan)
        return Final(_finish(state, partials, params))


register(Summary())
