"""Studies: the list the viewer may see, and one study's per-node timeline, result (tables,
charts, downloads), meter records and cost.

Every view goes through ``studies.get_study`` with the viewer's principal, so a chart or a
download is scoped exactly like the page; every response carrying a released result is on
the audit ledger as ``study.result_access``, as the API's reads are.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import TemplateError
from markupsafe import Markup
from sqlalchemy.orm import Session

from healthspace.core.enums import Role, StudyStatus, TaskStatus
from healthspace.core.errors import HealthspaceError, NotFound
from healthspace.core.models import StudyView
from healthspace.hub.console import charts
from healthspace.hub.console.web import PREFIX, TEMPLATES, Viewer, page, render
from healthspace.hub.deps import get_hub
from healthspace.hub.principal import Principal
from healthspace.hub.services import metering, statements, studies
from healthspace.hub.services.periods import period_of
from healthspace.hub.settings import HubSettings

router = APIRouter()
log = logging.getLogger(__name__)
# What a result of an unexpected shape raises when a table, chart or partial reads it.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# Whose statement a viewer's cost lines come from (the billing service checks it again).
STATEMENT_KIND: dict[Role, statements.Kind] = {
    Role.CONSUMER: "invoice", Role.DATA_HOLDER_ADMIN: "earnings", Role.OPERATOR: "platform",
    Role.AUDITOR: "platform"}
DEDICATED = {"cohort_count", "summary", "glm", "km", "cox", "fl_train", "casemix",
             "drg_weights", "fraud_screen", "evidence_check", "drug_value", "claim_check"}


@router.get("/studies", response_class=HTMLResponse)
def study_list(request: Request, status: str | None = None,
               viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    chosen = StudyStatus(status) if status in {s.value for s in StudyStatus} else None
    with hub.sessions() as session:
        rows = studies.list_studies(session, hub.clock, viewer.principal, status=chosen,
                                    limit=200, offset=0)
    return render(request, viewer, "studies.html", title=viewer.t("Studies"), rows=rows,
                  statuses=[s.value for s in StudyStatus], status=chosen)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def _study(request: Request, viewer: Viewer, study_id: int, released: bool = False
           ) -> StudyView:
    """The study as the viewer may see it; with ``released``, only once it has a result."""
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        with hub.sessions() as session:
            view = studies.get_study(session, hub.clock, viewer.principal, study_id)
    except HealthspaceError as exc:
        raise _Refusal(exc.status_code, exc.message) from exc
    if released and view.result is None:
        raise _Refusal(NotFound.status_code, viewer.t("This study has no result yet."))
    return view


def _refused(request: Request, viewer: Viewer, study_id: int, exc: _Refusal) -> HTMLResponse:
    return render(request, viewer, "error.html", status_code=exc.status,
                  title=viewer.t("Study {id}", id=study_id), message=exc.message)


def _accessed(request: Request, viewer: Viewer, view: StudyView, via: str) -> None:
    """Put a read of the released result on the ledger, as the API does."""
    assert viewer.principal is not None
    get_hub(request).audit.record(viewer.principal.name, "study.result_access",
                                  f"study:{view.id}", {"status": str(view.status),
                                                       "via": "console", "as": via})


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_detail(study_id: int, request: Request,
                 viewer: Viewer = Depends(page())) -> HTMLResponse:
    try:
        view = _study(request, viewer, study_id)
    except _Refusal as exc:
        return _refused(request, viewer, study_id, exc)
    hub = get_hub(request)
    assert viewer.principal is not None
    with hub.sessions() as session:
        use = usage(session, hub.settings, viewer.principal, view)
    context: dict[str, Any] = {"study": view, "journeys": journeys(viewer, view), "usage": use,
                               "general": [e for e in view.timeline if e.node is None],
                               "detail_text": lambda e: detail_text(viewer, e.detail),
                               "cell": lambda value, kind="text": cell(viewer, value, kind),
                               "grid": breakdown_grid, "base": f"{PREFIX}/studies/{study_id}"}
    if view.result is not None:
        _accessed(request, viewer, view, "page")
        context.update(result=view.result, params=view.params, table=main_table(view),
                       result_json=json.dumps(view.result, indent=2, ensure_ascii=False))
        try:
            context["charts"] = charts.charts_for(view.analysis, view.result, view.params)
        except SHAPE_ERRORS:
            context["charts"] = []
        context["result_html"] = result_html(viewer, view, context)
    if view.delivered:
        context["delivered_json"] = json.dumps(view.delivered, indent=2, ensure_ascii=False)
    title = viewer.t("Study {id}", id=study_id) + (f": {view.title}" if view.title else "")
    return render(request, viewer, "study.html", title=title, **context)


def result_html(viewer: Viewer, view: StudyView, context: dict[str, Any]) -> Markup:
    """The result's partial (``result_<analysis>.html``), or the generic one when there is
    none or the result has a shape the partial does not expect: never a failed page."""
    names = ([f"result_{view.analysis}.html"] if view.analysis in DEDICATED else []) + [
        "result_generic.html"]
    values = {"viewer": viewer, "_": viewer.t, "t": viewer.t, "lang": viewer.t.lang,
              "prefix": PREFIX, **context}
    for name in names:
        try:
            # An autoescaping template's output (select_autoescape: .html) is escaped already.
            return Markup(TEMPLATES.get_template(name).render(values))  # noqa: S704
        except (TemplateError, *SHAPE_ERRORS):
            log.warning("study %s: %s cannot show this result", view.id, name, exc_info=True)
    return Markup("")


@router.get("/studies/{study_id}/result.json")
def result_json(study_id: int, request: Request,
                viewer: Viewer = Depends(page())) -> Response:
    try:
        view = _study(request, viewer, study_id, released=True)
    except _Refusal as exc:
        return _refused(request, viewer, study_id, exc)
    _accessed(request, viewer, view, "result.json")
    return Response(json.dumps(results_document(view), indent=2, ensure_ascii=False),
                    media_type="application/json",
                    headers=_attachment(f"study-{study_id}-{view.analysis}.json"))


@router.get("/studies/{study_id}/result.csv")
def result_csv(study_id: int, request: Request,
               viewer: Viewer = Depends(page())) -> Response:
    try:
        view = _study(request, viewer, study_id, released=True)
    except _Refusal as exc:
        return _refused(request, viewer, study_id, exc)
    _accessed(request, viewer, view, "result.csv")
    return Response(to_csv(main_table(view)), media_type="text/csv; charset=utf-8",
                    headers=_attachment(f"study-{study_id}-{view.analysis}.csv"))


@router.get("/studies/{study_id}/chart/{name}.{fmt}")
def chart(study_id: int, name: str, fmt: str, request: Request, download: bool = False,
          viewer: Viewer = Depends(page())) -> Response:
    try:
        view = _study(request, viewer, study_id, released=True)
        assert view.result is not None
        if fmt not in charts.FORMATS:
            raise LookupError(fmt)
        body = charts.render(view.analysis, view.result, view.params, name, fmt)
    except _Refusal as exc:
        return _refused(request, viewer, study_id, exc)
    except (LookupError, *SHAPE_ERRORS):  # no such chart, or none this result can draw
        return _refused(request, viewer, study_id, _Refusal(
            404, viewer.t("This study's result has no chart {name}.", name=f"{name}.{fmt}")))
    _accessed(request, viewer, view, f"chart:{name}.{fmt}")
    headers = _attachment(f"study-{study_id}-{name}.{fmt}") if download else {}
    return Response(body, media_type=charts.FORMATS[fmt], headers=headers)


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


def results_document(view: StudyView) -> dict[str, Any]:
    """The result with the study id, status and each node's latest task status — the shape
    ``healthspace study results --json`` prints."""
    latest = {t.node: t.status.value for t in sorted(view.tasks, key=lambda t: t.round)}
    doc: dict[str, Any] = {**(view.result or {}), "study_id": view.id,
                           "status": view.status.value, "nodes": latest}
    if view.error:
        doc["error"] = view.error
    return doc


# --- the timeline, per node ----------------------------------------------------------------


@dataclass
class Step:
    label: str  # English msgid
    state: str  # done | current | failed | pending
    at: datetime | None = None
    value: str | None = None  # translated by the template (an enum value)
    notes: list[str] = field(default_factory=list)  # shown as they are


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def journeys(viewer: Viewer, view: StudyView) -> list[dict[str, Any]]:
    """Per node: submitted → policy decision → approval steps → running → done or refused,
    with reasons, and the node's own timeline events."""
    out = []
    for node in view.nodes:
        decision = view.decisions.get(node) or {}
        tasks = sorted((t for t in view.tasks if t.node == node), key=lambda t: t.round)
        steps = [Step("Study submitted", "done", view.created_at)]
        checked = next((e for e in view.timeline if e.node == node
                        and e.event == "policy_checked"), None)
        if decision:
            steps.append(Step("Policy decision", "failed" if decision["outcome"] == "deny"
                              else "done", checked.at if checked else None,
                              decision["outcome"],
                              [str(r.get("message")) for r in decision.get("reasons") or []]))
        for a in decision.get("approvals") or []:
            steps.append(Step("Approval" if a["approved"] else "Rejection",
                              "done" if a["approved"] else "failed", _when(a["at"]), a["step"],
                              _approval_notes(viewer, a)))
        if decision.get("approval") == "expired":
            steps += [Step("Approval expired", "failed", None, step)
                      for step in decision.get("missing_steps") or []]
        elif decision.get("approval") == "pending":
            waiting = "current" if view.status == StudyStatus.AWAITING_APPROVAL else "pending"
            steps += [Step("Awaiting approval", waiting, None, step)
                      for step in decision.get("missing_steps") or []]
        last = tasks[-1] if tasks else None
        started = [t.started_at for t in tasks if t.started_at]
        if last is not None and started:
            steps.append(Step("Running", "done" if last.status.terminal else "current",
                              min(started)))
        if last is not None and last.status.terminal:
            steps.append(Step("Ended", "done" if last.status == TaskStatus.COMPLETED
                              else "failed", last.finished_at, last.status.value,
                              [last.error] if last.error else []))
        elif not view.status.terminal:
            steps.append(Step("Ended", "pending"))
        out.append({"node": node, "steps": steps, "tasks": tasks,
                    "rounds": len({t.round for t in tasks if t.status == TaskStatus.COMPLETED}),
                    "events": [e for e in view.timeline if e.node == node]})
    return out


def _approval_notes(viewer: Viewer, approval: dict[str, Any]) -> list[str]:
    notes = [viewer.t("by {name}", name=approval["by"])] if approval.get("by") else []
    if approval.get("comment"):
        notes.append(approval["comment"])
    if approval.get("ethics_ref"):
        notes.append(viewer.t("ethics committee reference {ref}", ref=approval["ethics_ref"]))
    return notes


DETAIL_LABELS = {"outcome": "Decision", "reasons": "Reasons", "step": "Step", "by": "By",
                 "comment": "Comment", "round": "Round", "status": "Status",
                 "policy_version": "Policy version", "rating": "Rating", "kind": "Kind"}
TRANSLATED = {"outcome", "step", "status"}  # detail values that are enumerations


def detail_text(viewer: Viewer, detail: dict[str, Any]) -> str:
    """A timeline event's detail as one line in the viewer's language."""
    parts = []
    for key, value in detail.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else value
        label = viewer.t(DETAIL_LABELS[key]) if key in DETAIL_LABELS else key
        parts.append(viewer.t("{label}: {value}", label=label, value=viewer.t(str(shown))
                              if key in TRANSLATED else shown))
    return viewer.t("; ").join(parts)


# --- meter records and cost ----------------------------------------------------------------


def usage(session: Session, settings: HubSettings, principal: Principal,
          view: StudyView) -> dict[str, Any]:
    """The study's meter records the viewer may see (the ``/meter`` service), summed per
    node, and each node's settled charge from the viewer's statement of that month."""
    meters = metering.list_records(session, principal, study_id=view.id, node=None,
                                   period=None, limit=500, offset=0)
    nodes: dict[str, dict[str, Any]] = {}
    for record in meters.records:
        m = record.meter
        row = nodes.setdefault(record.node, {"node": record.node, "holder": record.holder,
                                             "records": 0, "persons": 0, "seconds": 0.0,
                                             "bytes": 0, "epsilon": 0.0, "line": None})
        row["records"] += 1
        row["persons"] = max(row["persons"], m.persons)  # the same persons every round
        row["seconds"] += m.seconds
        row["bytes"] += m.bytes
        row["epsilon"] += m.epsilon
    lines = []
    kind = STATEMENT_KIND.get(principal.role) if principal.role else None
    cost = view.cost
    if cost is not None and cost.settled_at is not None and kind is not None:
        try:
            found = statements.statement(session, settings, principal, None,
                                         period_of(cost.settled_at), kind)
        except HealthspaceError:
            found = None
        lines = [line for line in (found.lines if found else []) if line.study_id == view.id]
        for line in lines:
            if line.node in nodes:
                nodes[line.node]["line"] = line
    return {"records": meters.records, "totals": meters.totals, "nodes": list(nodes.values()),
            "lines": lines, "cost": cost, "currency": settings.currency,
            "charge": round(sum(line.charge for line in lines), 2) if lines else None,
            "persons": sum(row["persons"] for row in nodes.values())}


# --- cells ---------------------------------------------------------------------------------


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
