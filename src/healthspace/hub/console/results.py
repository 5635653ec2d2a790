"""A study result as tables: the cells the study page shows and the main table that
``result.csv`` downloads, per analysis (a generic table for any other shape)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from healthspace.core.models import StudyView
from healthspace.hub.console.web import Viewer

# What a result of an unexpected shape raises when a table, chart or partial reads it.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def cell(viewer: Viewer, value: Any, kind: str = "text") -> str:
    """A value as the page shows it: suppressed labels as they are, numbers localised."""
    t = viewer.t
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return t("yes") if value else t("no")
    if isinstance(value, str):
        return t(value) if kind == "label" else value
    if isinstance(value, list):
        return ", ".join(cell(viewer, v, kind) for v in value)
    if not isinstance(value, (int, float)) or kind == "text":
        return str(value)
    if kind == "p":
        return "< 0.0001" if value < 1e-4 else t.number(value, 4)
    digits = {"count": None, "num1": 1, "num2": 2, "num3": 3, "num4": 4, "pct": 1}.get(kind, 3)
    if kind == "count" and isinstance(value, float) and not value.is_integer():
        digits = 1
    text = t.number(value, digits) if digits is not None else t.number(int(value))
    return text + " %" if kind == "pct" else text


def breakdown_grid(cells: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """A cohort breakdown (age band × sex cells) as rows ``(band, F, M)``; the unknown cell
    is its own row."""
    rows: dict[str, dict[str, Any]] = {}
    for c in cells:
        rows.setdefault(c["age_band"], {})[c["sex"]] = c["count"]
    return [(band, v.get("F", v.get("unknown")), v.get("M")) for band, v in rows.items()]


# --- the main table of each analysis (shown on the page, and result.csv) -------------------


@dataclass(frozen=True)
class Column:
    key: str
    label: str  # English msgid
    kind: str = "text"


@dataclass
class Table:
    columns: list[Column]
    rows: list[dict[str, Any]]
    footer: dict[str, Any] | None = None  # the total line; its first cell reads "total"


def _cols(*spec: str) -> list[Column]:
    """``"key:Label:kind"`` (kind defaults to text)."""
    return [Column(*s.split(":")) for s in spec]


def _shown(value: Any, k: Any) -> Any:
    """A count a node suppressed (sent as null) is shown as ``<k``."""
    return f"<{k}" if value is None and k else value


def _t_cohort_count(r: dict[str, Any], p: dict[str, Any]) -> Table:
    k = r.get("min_cell_size") or {}
    cols = _cols("site:Node", "count:Count:count", "min_cell_size:Minimum cell size:count")
    if r.get("dp"):
        cols.insert(2, Column("interval", "± (95 %)", "count"))
    rows = [{"site": s, "count": v, "min_cell_size": k.get(s),
             "interval": (r.get("intervals") or {}).get(s)} for s, v in r["sites"].items()]
    return Table(cols, rows, {"site": "total", "count": r.get("total"),
                              "interval": r.get("total_interval")})


def _t_summary(r: dict[str, Any], p: dict[str, Any]) -> Table:
    qs = [f"q{round(100 * q):g}" for q in p.get("quantiles") or []]
    cols = [*_cols("stratum:Stratum", "variable:Variable", "level:Level", "n:N:count",
                   "missing:Missing:count", "mean:Mean:num3", "sd:SD:num3"),
            *[Column(q, q.upper(), "num3") for q in qs],
            *_cols("count:Count", "percent:Percent:pct")]
    rows = []
    for stratum, entry in r["strata"].items():
        for var, s in entry["numeric"].items():
            rows.append({"stratum": stratum, "variable": var, "n": s["n"],
                         "missing": s["missing"], "mean": s["mean"], "sd": s["sd"],
                         **{q: x["value"] for q, x in zip(qs, s.get("quantiles") or [],
                                                         strict=False)}})
        for var, levels in entry["categorical"].items():
            rows += [{"stratum": stratum, "variable": var, "level": c["level"],
                      "count": c["display"], "percent": c.get("percent")} for c in levels]
    return Table(cols, rows)


def _coefficients(r: dict[str, Any], hazard: bool) -> list[dict[str, Any]]:
    rows = []
    for term, beta in r["params"].items():
        lo, hi = r["conf_int"][term]
        row = {"term": term, "estimate": beta, "std_error": r["bse"][term],
               "z": r["zvalues"][term], "p": r["pvalues"][term], "ci_lower": lo, "ci_upper": hi}
        if hazard or r.get("family") in ("binomial", "poisson"):
            row.update(ratio=math.exp(beta), ratio_lower=math.exp(lo), ratio_upper=math.exp(hi))
        rows.append(row)
    return rows


def _t_glm(r: dict[str, Any], p: dict[str, Any]) -> Table:
    cols = _cols("term:Term", "estimate:Estimate:num4", "std_error:Std. error:num4",
                 "z:z:num2", "p:p:p", "ci_lower:95 % CI lower:num4", "ci_upper:95 % CI upper:num4")
    ratio = {"binomial": "Odds ratio", "poisson": "Rate ratio"}.get(r.get("family", ""))
    if ratio:
        cols += [Column("ratio", ratio, "num3"), *_cols("ratio_lower:Lower:num3",
                                                        "ratio_upper:Upper:num3")]
    return Table(cols, _coefficients(r, hazard=False))


def _t_cox(r: dict[str, Any], p: dict[str, Any]) -> Table:
    return Table(_cols("term:Covariate", "estimate:Coefficient:num4",
                       "std_error:Std. error:num4", "z:z:num2", "p:p:p",
                       "ratio:Hazard ratio:num3", "ratio_lower:Lower:num3",
                       "ratio_upper:Upper:num3"), _coefficients(r, hazard=True))


def _t_km(r: dict[str, Any], p: dict[str, Any]) -> Table:
    curves = r.get("groups") or {"all": r}
    rows = [{"group": g, "time": t, "at_risk": n, "survival": s, "ci_lower": lo, "ci_upper": hi}
            for g, c in curves.items() for t, n, s, lo, hi in zip(
                c["timeline"], c["at_risk"], c["survival"], c["ci_lower"], c["ci_upper"],
                strict=True)]
    return Table(_cols("group:Group", "time:Time:num2", "at_risk:At risk:count",
                       "survival:Survival:num4", "ci_lower:95 % CI lower:num4",
                       "ci_upper:95 % CI upper:num4"), rows)


def _t_fl_train(r: dict[str, Any], p: dict[str, Any]) -> Table:
    rows = [{**e, "dropped": ", ".join(e.get("dropped") or [])} for e in r.get("rounds") or []]
    return Table(_cols("round:Round:count", "nodes:Nodes:count", "dropped:Dropped",
                       "loss:Loss:num4", "auc:AUC:num4", "brier:Brier score:num4",
                       "validation_loss:Validation loss:num4",
                       "validation_auc:Validation AUC:num4"), rows)


def _t_drg(r: dict[str, Any], p: dict[str, Any]) -> Table:
    k = r.get("min_cell_size")
    weights = "trim" in r  # drg_weights; casemix has no trimming
    rows = [{**g, "cases": f"<{k}" if g.get("suppressed") else g.get("cases"),
             "trim_lower": (g.get("trim_bounds") or [None, None])[0],
             "trim_upper": (g.get("trim_bounds") or [None, None])[1]} for g in r["groups"]]
    cols = _cols("drg:DRG", "mdc:MDC", "title:Title", "cases:Cases:count")
    if weights:
        cols += _cols("trimmed_cases:Cases after trimming:count", "mean_charge:Mean charge:num2",
                      "median_charge:Median charge:num2", "cv_charge:CV of charge:num3",
                      "untrimmed_mean_charge:Untrimmed mean charge:num2",
                      "mean_los:Mean length of stay:num2", "median_los:Median length of stay:num1",
                      "relative_weight:Relative weight:num4", "trim_lower:Trim lower:num2",
                      "trim_upper:Trim upper:num2")
    else:
        cols += _cols("mean_los:Mean length of stay:num2", "mean_charge:Mean charge:num2",
                      "relative_weight:Relative weight:num4")
    return Table(cols, rows)


def _t_hospitals(keys: tuple[str, ...], k_key: str) -> Callable[..., Table]:
    def build(r: dict[str, Any], p: dict[str, Any]) -> Table:
        k = r.get(k_key)
        rows = [{key: _shown(h.get(key), k) if key != "hospital" else h[key] for key in keys}
                for h in r.get("hospitals") or []]
        return Table([Column(key, LABELS[key], "text" if key == "hospital" else "count")
                      for key in keys], rows)
    return build


LABELS = {"hospital": "Hospital", "claims": "Claims", "split_admission": "Split admissions",
          "duplicate_billing": "Duplicate billing", "outlier_los": "Length-of-stay outliers",
          "supported": "Supported", "unsupported": "Unsupported", "no_record": "No record"}


def _t_drug_value(r: dict[str, Any], p: dict[str, Any]) -> Table:
    def ci(item: dict[str, Any] | None) -> tuple[Any, Any, Any]:
        item = item or {}
        lo, hi = item.get("ci") or (None, None)
        return item.get("estimate"), lo, hi

    rows = []
    for name, a in r["arms"].items():
        ev, cost, horizon = ci(a["events_per_100py"]), ci(a["cost_per_py"]), ci(
            a["survival_at_horizon"])
        rows.append({"arm": name, "role": a["role"], "persons": a["persons"],
                     "events": a["events"], "person_years": a["person_years"],
                     "events_per_100py": ev[0], "events_lower": ev[1], "events_upper": ev[2],
                     "cost_per_py": cost[0], "cost_lower": cost[1], "cost_upper": cost[2],
                     "median_survival_days": a["median_survival_days"],
                     "survival_at_horizon": horizon[0]})
    return Table(_cols("arm:Arm", "role:Role:label", "persons:Persons:count",
                       "events:Events:count", "person_years:Person-years:num1",
                       "events_per_100py:Events per 100 person-years:num2",
                       "events_lower:Lower:num2", "events_upper:Upper:num2",
                       "cost_per_py:Cost per patient-year:num2", "cost_lower:Lower:num2",
                       "cost_upper:Upper:num2", "median_survival_days:Median survival (days):num1",
                       "survival_at_horizon:Survival at the horizon:num4"), rows)


def _t_claim_check(r: dict[str, Any], p: dict[str, Any]) -> Table:
    return Table(_cols("node:Node", "claims:Claims checked:count",
                       "settled_visits:Settled visits:count"),
                 [{"node": r.get("node"), "claims": r.get("claims"),
                   "settled_visits": r.get("settled_visits")}])


def _t_similar_patients(r: dict[str, Any], p: dict[str, Any]) -> Table:
    """One row per group and outcome: who was treated and how many had the outcome."""
    kinds = {"treatment": "treatment", "none": "none of the candidates", "all": "all matched"}
    rows = [{"group": g["name"], "kind": kinds.get(g.get("kind"), g.get("kind")),
             "treated": g.get("treated"),
             "share": g.get("share"), "outcome": name, "events": o.get("events"),
             "rate": o.get("rate"), "rate_lower": (o.get("rate_range") or [None, None])[0],
             "rate_upper": (o.get("rate_range") or [None, None])[1],
             "median": (g.get("km") or {}).get("median")
             if name == r.get("km_outcome") else None}
            for g in r["groups"] for name, o in (g.get("outcomes") or {}).items()]
    return Table(_cols("group:Group", "kind:Kind:label", "treated:Treated:count",
                       "share:Share:num3", "outcome:Outcome", "events:Events:count",
                       "rate:Rate:num3", "rate_lower:Rate at least:num3",
                       "rate_upper:Rate at most:num3",
                       "median:Median time to the outcome (days):num1"),
                 rows)


def _is_array(value: Any) -> bool:
    return isinstance(value, dict) and {"dtype", "shape", "data"} <= set(value)


def _t_generic(r: dict[str, Any], p: dict[str, Any]) -> Table:
    """The first list of records in the result, else every scalar by its key path."""
    for value in r.values():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k, x in v.items()
                                      if not isinstance(x, (dict, list))))
            return Table([Column(k, k, "num4" if isinstance(value[0].get(k), float) else
                                 "count" if isinstance(value[0].get(k), int) else "text")
                          for k in keys], [dict(v) for v in value])
    rows: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if _is_array(value):
            rows.append({"key": prefix, "value": f"array {value['shape']}"})
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and not all(isinstance(v, (int, float, str)) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        else:
            rows.append({"key": prefix, "value": value})

    walk("", r)
    return Table(_cols("key:Key", "value:Value"), rows)


TABLES: dict[str, Callable[[dict[str, Any], dict[str, Any]], Table]] = {
    "cohort_count": _t_cohort_count, "summary": _t_summary, "glm": _t_glm, "cox": _t_cox,
    "km": _t_km, "fl_train": _t_fl_train, "casemix": _t_drg, "drg_weights": _t_drg,
    "fraud_screen": _t_hospitals(("hospital", "claims", "split_admission",
                                  "duplicate_billing", "outlier_los"), "k"),
    "evidence_check": _t_hospitals(("hospital", "claims", "supported", "unsupported",
                                    "no_record"), "k"),
    "drug_value": _t_drug_value, "claim_check": _t_claim_check,
    "similar_patients": _t_similar_patients,
}


def main_table(view: StudyView) -> Table:
    assert view.result is not None
    try:
        return TABLES.get(view.analysis, _t_generic)(view.result, view.params)
    except SHAPE_ERRORS:
        return _t_generic(view.result, view.params)  # a result of an unexpected shape


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    # A cell a spreadsheet would run as a formula is quoted (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in table.columns])
    for row in table.rows + ([table.footer] if table.footer else []):
        writer.writerow([_csv_value(row.get(c.key)) for c in table.columns])
    return out.getvalue()
