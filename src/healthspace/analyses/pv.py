"""Pharmacovigilance disproportionality: PRR, ROR and Yates χ² per drug–event pair, pooled.

A *report* is a person-time cell (CDM mode) or a report id (table mode). For every drug D and
event E the hub builds the pooled 2×2 table — a: reports with D and E, b: D without E, c: E
without D, d: neither — from counts each node releases with small-count suppression, and flags
Evans' signal (PRR ≥ 2, χ² ≥ 4, a ≥ 3). See docs/pharmacovigilance.md for the exact definitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import duckdb
import numpy as np
from pydantic import Field
from scipy import stats

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.registry import register
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.disclosure import suppressed_label

TABLE = "analysis_data"
Z95 = float(stats.norm.ppf(0.975))
CDM_ONLY = ("drug_level", "event_level", "window_days")
TABLE_ONLY = ("report", "drug", "event")


class PvParams(Params):
    source: Literal["cdm", "table"] = "cdm"
    report: str = "report_id"
    drug: str = "drug"
    event: str = "event"
    drug_level: int = Field(default=7, ge=1, le=20)
    event_level: int = Field(default=3, ge=1, le=20)
    window_days: int = Field(default=30, ge=1, le=3650)
    drugs: list[str] = []
    events: list[str] = []


# Every source fills three temp tables: _pv_rd (report, person, drug), _pv_re (report, person,
# event) and _pv_hit (report, person, drug, event), plus _pv_n (the number of reports). In CDM
# mode a report is one person-time cell: each observation period is cut into consecutive cells
# of ``window_days`` days from its start; a drug is on cell j when a dispensing of it started in
# cell j − 1 (the exposure window that follows a dispensing), an event when the person's first
# ever record of it (new onset) falls in cell j. Cell 0 of a period, whose previous cell is
# unobserved, is not a report.
_CDM_SQL = """
CREATE OR REPLACE TEMP TABLE _pv_op AS
SELECT op.person_id AS person, op.observation_period_start_date AS a,
       CAST(floor((datediff('day', op.observation_period_start_date,
                            op.observation_period_end_date) + 1) / ?) AS BIGINT) AS n
FROM observation_period op
WHERE op.person_id IN ({persons}) AND op.observation_period_start_date IS NOT NULL
  AND op.observation_period_end_date >= op.observation_period_start_date;
CREATE OR REPLACE TEMP TABLE _pv_n AS
SELECT coalesce(sum(greatest(n - 1, 0)), 0) AS n FROM _pv_op;
CREATE OR REPLACE TEMP TABLE _pv_rd AS
SELECT DISTINCT concat_ws('/', o.person, o.a, j) AS report, o.person, x.drug
FROM (SELECT de.person_id AS person, left(de.drug_source_value, ?) AS drug,
             de.drug_exposure_start_date AS s
      FROM drug_exposure de
      WHERE de.drug_exposure_start_date IS NOT NULL
        AND coalesce(trim(de.drug_source_value), '') <> '') x
JOIN _pv_op o ON o.person = x.person,
LATERAL (SELECT CAST(floor(datediff('day', o.a, x.s) / ?) AS BIGINT) + 1 AS j)
WHERE j BETWEEN 1 AND o.n - 1;
CREATE OR REPLACE TEMP TABLE _pv_re AS
SELECT DISTINCT concat_ws('/', o.person, o.a, j) AS report, o.person, x.event
FROM (SELECT co.person_id AS person, left(co.condition_source_value, ?) AS event,
             min(co.condition_start_date) AS onset
      FROM condition_occurrence co
      WHERE co.condition_start_date IS NOT NULL
        AND coalesce(trim(co.condition_source_value), '') <> ''
      GROUP BY ALL) x
JOIN _pv_op o ON o.person = x.person,
LATERAL (SELECT CAST(floor(datediff('day', o.a, x.onset) / ?) AS BIGINT) AS j)
WHERE j BETWEEN 1 AND o.n - 1;
CREATE OR REPLACE TEMP TABLE _pv_hit AS
SELECT d.report, d.person, d.drug, e.event FROM _pv_rd d JOIN _pv_re e USING (report, person);
"""

_TABLE_SQL = """
CREATE OR REPLACE TEMP TABLE _pv_rd AS
SELECT DISTINCT CAST("{report}" AS VARCHAR) AS report, CAST("{report}" AS VARCHAR) AS person,
       CAST("{drug}" AS VARCHAR) AS drug
FROM {table} WHERE "{report}" IS NOT NULL AND "{drug}" IS NOT NULL;
CREATE OR REPLACE TEMP TABLE _pv_re AS
SELECT DISTINCT CAST("{report}" AS VARCHAR) AS report, CAST("{report}" AS VARCHAR) AS person,
       CAST("{event}" AS VARCHAR) AS event
FROM {table} WHERE "{event}" IS NOT NULL
  AND CAST("{report}" AS VARCHAR) IN (SELECT report FROM _pv_rd);
CREATE OR REPLACE TEMP TABLE _pv_hit AS
SELECT d.report, d.person, d.drug, e.event FROM _pv_rd d JOIN _pv_re e USING (report, person);
CREATE OR REPLACE TEMP TABLE _pv_n AS SELECT count(DISTINCT report) AS n FROM _pv_rd;
"""

# Per pair: a reports and the distinct persons behind them.
_COUNTS_SQL = """
SELECT drug, event, count(*) AS a, count(DISTINCT person) AS persons
FROM _pv_hit GROUP BY ALL
"""


def _columns(ctx: LocalContext, table: str) -> set[str] | None:
    rows = ctx.con.execute("SELECT column_name FROM information_schema.columns "
                           "WHERE table_name = ?", [table]).fetchall()
    return {str(r[0]) for r in rows} or None


def _build(ctx: LocalContext, params: PvParams) -> None:
    """Create the report–drug, report–event and hit temp tables for this site."""
    if params.source == "table":
        cols = _columns(ctx, TABLE)
        if cols is None:
            raise InvalidInput(f"source 'table' reads the table {TABLE!r}, which this site "
                               f"lacks (OMOP folders use source 'cdm')", field="params.source")
        for key in TABLE_ONLY:
            if getattr(params, key) not in cols:
                raise InvalidInput(f"unknown column {getattr(params, key)!r}",
                                   field=f"params.{key}")
        names = {key: getattr(params, key).replace('"', '""') for key in TABLE_ONLY}
        for statement in _statements(_TABLE_SQL.format(table=TABLE, **names)):
            ctx.con.execute(statement)
        return
    if _columns(ctx, "drug_exposure") is None:
        raise InvalidInput("source 'cdm' reads drug_exposure and condition_occurrence; this "
                           "site has no OMOP tables (use source 'table')", field="params.source")
    if ctx.cohort is not None:
        sql, args = ctx.cohort_persons_sql()
        persons = f"SELECT person_id FROM ({sql}) AS c"
    else:
        persons, args = ctx.consented_persons_sql(), []
    w = params.window_days
    periods, total, drugs, events, hits = _statements(_CDM_SQL.format(persons=persons))
    ctx.con.execute(periods, [w, *args])
    ctx.con.execute(total)
    ctx.con.execute(drugs, [params.drug_level, w])
    ctx.con.execute(events, [params.event_level, w])
    ctx.con.execute(hits)


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _matches(code: str, prefixes: list[str]) -> bool:
    return not prefixes or any(code.startswith(p) for p in prefixes)


def _release(ctx: LocalContext, params: PvParams) -> dict[str, Any]:
    """Counts of this site, only those that come from at least k reports AND k persons (a
    person contributes many person-time cells in CDM mode); everything unlisted is below k."""
    k = ctx.min_cell_size
    con = ctx.con
    n_reports = int(con.execute("SELECT n FROM _pv_n").fetchone()[0])  # type: ignore[index]
    n_persons = int(con.execute(  # type: ignore[index]
        "SELECT count(DISTINCT person) FROM _pv_rd").fetchone()[0])
    ctx.records_used = n_reports
    if n_reports < k or n_persons < k:
        raise Refused(f"only {n_reports} reports from {n_persons} persons with a drug, below "
                      f"the minimum cell size {k}; the disproportionality analysis is refused")
    drugs = {str(d): int(n) for d, n, persons in con.execute(
        "SELECT drug, count(*), count(DISTINCT person) FROM _pv_rd GROUP BY drug").fetchall()
        if n >= k and persons >= k and _matches(str(d), params.drugs)}
    events = {str(e): int(n) for e, n, persons in con.execute(
        "SELECT event, count(*), count(DISTINCT person) FROM _pv_re GROUP BY event").fetchall()
        if n >= k and persons >= k and _matches(str(e), params.events)}
    pairs = []
    for drug, event, a, persons in con.execute(_COUNTS_SQL).fetchall():
        if drug in drugs and event in events:
            released = int(a) if a >= k and persons >= k else suppressed_label(k)
            pairs.append({"drug": drug, "event": event, "a": released})
    pairs.sort(key=lambda p: (p["drug"], p["event"]))
    return {"N": n_reports, "min_cell_size": k, "drugs": dict(sorted(drugs.items())),
            "events": dict(sorted(events.items())), "pairs": pairs}


def yates_chi2(table: np.ndarray) -> float | None:
    """Pearson χ² with Yates' correction of a 2×2 table, computed as scipy's
    ``chi2_contingency(table, correction=True)``; None when a margin is zero."""
    observed = np.asarray(table, dtype=np.float64)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True)
    expected = expected / observed.sum()
    if np.any(expected == 0):
        return None
    diff = expected - observed
    observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    return float(((observed - expected) ** 2 / expected).sum())


def _ratio_ci(log_ratio: float, se: float) -> list[float]:
    return [math.exp(log_ratio - Z95 * se), math.exp(log_ratio + Z95 * se)]


def disproportionality(a: int, b: int, c: int, d: int) -> dict[str, Any]:
    """PRR and ROR with 95 % intervals (log scale), Yates χ² and Evans' signal flag."""
    out: dict[str, Any] = {"prr": None, "prr_ci": None, "ror": None, "ror_ci": None}
    if a > 0 and c > 0:
        prr = (a / (a + b)) / (c / (c + d))
        out["prr"] = prr
        out["prr_ci"] = _ratio_ci(math.log(prr), math.sqrt(1 / a - 1 / (a + b) + 1 / c
                                                           - 1 / (c + d)))
    if min(a, b, c, d) > 0:
        ror = (a * d) / (b * c)
        out["ror"] = ror
        out["ror_ci"] = _ratio_ci(math.log(ror), math.sqrt(1 / a + 1 / b + 1 / c + 1 / d))
    chi2 = yates_chi2(np.array([[a, b], [c, d]]))
    out["chi2"] = chi2
    out["chi2_p"] = None if chi2 is None else float(stats.chi2.sf(chi2, 1))
    prr_value = out["prr"] if out["prr"] is not None else (math.inf if a > 0 else 0.0)
    out["signal"] = bool(prr_value >= 2 and chi2 is not None and chi2 >= 4 and a >= 3)
    return out


def _pool_pair(drug: str, event: str, partials: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The pooled 2×2 of one pair; suppressed or unlisted site counts enter as 0 (then ``c``
    holds the suppressed reports with the event too, at most ``a_upper_bound − a`` more)."""
    a = n_drug = n_event = slack = 0
    by_site: dict[str, int | str] = {}
    exact = True
    for site, p in sorted(partials.items()):
        k = int(p["min_cell_size"])
        hit = next((q for q in p["pairs"] if q["drug"] == drug and q["event"] == event), None)
        value = hit["a"] if hit is not None else suppressed_label(k)
        by_site[site] = value
        if isinstance(value, int):
            a += value
        else:
            slack += k - 1
        n_drug += p["drugs"].get(drug, 0)
        n_event += p["events"].get(event, 0)
        exact &= (hit is not None and isinstance(value, int) and drug in p["drugs"]
                  and event in p["events"])
    n = sum(int(p["N"]) for p in partials.values())
    b = n_drug - a
    c = max(n_event - a, 0)
    d = max(n - n_drug - c, 0)
    return {"drug": drug, "event": event, "a": a, "b": b, "c": c, "d": d,
            "a_is_lower_bound": slack > 0, "a_upper_bound": a + slack, "exact": exact,
            "a_by_site": by_site, **disproportionality(a, b, c, d)}


def _sort_key(pair: dict[str, Any]) -> tuple[bool, float, str, str]:
    prr = pair["prr"] if pair["prr"] is not None else (math.inf if pair["a"] > 0 else 0.0)
    return (not pair["signal"], -prr, pair["drug"], pair["event"])


class Pv(Analysis):
    name = "pv"
    title = "Pharmacovigilance disproportionality (PRR, ROR, χ²) per drug–event pair"
    params_model = PvParams
    requires_cohort = False
    uses_table = False
    max_rounds = 1

    def parse_params(self, raw: Mapping[str, Any] | None) -> Params:
        params = super().parse_params(raw)
        assert isinstance(params, PvParams)
        unused = TABLE_ONLY if params.source == "cdm" else CDM_ONLY
        for key in unused:
            # A default value is harmless: the hub stores parameters with defaults filled in.
            default = PvParams.model_fields[key].default
            if key in params.model_fields_set and getattr(params, key) != default:
                raise InvalidInput(f"{key!r} does not apply to source {params.source!r}",
                                   field=f"params.{key}")
        if params.source == "cdm":
            for key, level in (("drugs", params.drug_level), ("events", params.event_level)):
                for prefix in getattr(params, key):
                    if len(prefix) > level:
                        raise InvalidInput(f"{prefix!r} is longer than {key[:-1]}_level "
                                           f"{level} and would match nothing",
                                           field=f"params.{key}")
        return params

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, PvParams)
        try:
            _build(ctx, params)
            return _release(ctx, params)
        except duckdb.Error as exc:
            raise InvalidInput(f"cannot read the {params.source} data: {exc}",
                               field="params.source") from None
        finally:
            for name in ("_pv_rd", "_pv_re", "_pv_hit", "_pv_n", "_pv_op"):
                ctx.con.execute(f"DROP TABLE IF EXISTS temp.{name}")

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, PvParams)
        if not partials:
            raise Refused("no site took part in the disproportionality analysis")
        released = {(q["drug"], q["event"]) for p in partials.values() for q in p["pairs"]
                    if isinstance(q["a"], int)}
        pairs = sorted((_pool_pair(d, e, partials) for d, e in released), key=_sort_key)
        return Final({
            "source": params.source, "pairs": pairs,
            "signals": [f"{p['drug']}→{p['event']}" for p in pairs if p["signal"]],
            "N": sum(int(p["N"]) for p in partials.values()),
            "sites": {s: int(partials[s]["N"]) for s in sorted(partials)},
            "min_cell_size": {s: int(partials[s]["min_cell_size"]) for s in sorted(partials)},
            "window_days": params.window_days if params.source == "cdm" else None,
        })


register(Pv())
