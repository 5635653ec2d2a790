"""Studies: the list the viewer may see, and one study's per-node timeline, result (tables,
charts, downloads), meter records and cost.

Every view goes through ``studies.get_study`` with the viewer's principal, so a chart or a
download is scoped exactly like the page; every response carrying a released result is on
the audit ledger as ``study.result_access``, as the API's reads are.
"""

from __future__ import annotations

import json
import logging
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
from healthspace.hub.console.results import (
    SHAPE_ERRORS,
    breakdown_grid,
    cell,
    main_table,
    to_csv,
)
from healthspace.hub.console.web import PREFIX, TEMPLATES, Viewer, page, render
from healthspace.hub.deps import get_hub
from healthspace.hub.principal import Principal
from healthspace.hub.services import metering, statements, studies
from healthspace.hub.services.periods import period_of
from healthspace.hub.settings import HubSettings

router = APIRouter()
log = logging.getLogger(__name__)
# Whose statement a viewer's cost lines come from (the billing service checks it again).
STATEMENT_KIND: dict[Role, statements.Kind] = {
    Role.CONSUMER: "invoice", Role.DATA_HOLDER_ADMIN: "earnings", Role.OPERATOR: "platform",
    Role.AUDITOR: "platform"}
DEDICATED = {"cohort_count", "summary", "glm", "km", "cox", "fl_train", "casemix",
             "drg_weights", "fraud_screen", "evidence_check", "drug_value", "claim_check",
             "similar_patients"}


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
    """A chart in the viewer's language. The page links it with ``?lang=`` (the viewer's
    ``language`` reads the query first), so each language is its own URL and no cache can
    hand one language's figure to another; without it the cookie or Accept-Language decide,
    which ``Vary`` says."""
    drawn = charts.drawing_translator(viewer.t)  # English when the language's font is missing
    try:
        view = _study(request, viewer, study_id, released=True)
        assert view.result is not None
        if fmt not in charts.FORMATS:
            raise LookupError(fmt)
        body = charts.render(view.analysis, view.result, view.params, name, fmt, drawn)
    except _Refusal as exc:
        return _refused(request, viewer, study_id, exc)
    except (LookupError, *SHAPE_ERRORS):  # no such chart, or none this result can draw
        return _refused(request, viewer, study_id, _Refusal(
            404, viewer.t("This study's result has no chart {name}.", name=f"{name}.{fmt}")))
    _accessed(request, viewer, view, f"chart:{name}.{fmt}")
    headers = {"Content-Language": "zh-Hans" if drawn.lang == "zh" else drawn.lang,
               "Vary": "Cookie, Accept-Language"}
    if download:
        headers.update(_attachment(f"study-{study_id}-{name}.{fmt}"))
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
                                         period_of(cost.settled_at), kind, study_id=view.id)
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
