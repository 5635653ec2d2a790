"""The study builder's pages: the cohort form with code search, the policy and feasibility
previews, then the analysis and its parameters — every step through the services the API
uses; reading the form is ``builder_form``'s."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from healthspace.analyses import registry
from healthspace.cohort.models import EVENT_KINDS
from healthspace.core.enums import Role
from healthspace.core.errors import HealthspaceError
from healthspace.core.models import StudyView
from healthspace.hub.console.builder_form import (
    ANALYSES,
    COLUMN_PARAMS,
    GROUPS,
    HINTS,
    OPS,
    PARAM_LABELS,
    ROWS,
    Values,
    defaults,
    example_datasets,
    field_key,
    label,
    params_of,
    spec_from,
    uses_cohort,
    values_from_study,
)
from healthspace.hub.console.web import PREFIX, TEMPLATES, Viewer, check_csrf, page, render
from healthspace.hub.deps import HubState, get_hub
from healthspace.hub.notifier import node_topic
from healthspace.hub.services import nodes as node_service
from healthspace.hub.services import studies

router = APIRouter()
BUILDERS = (Role.CONSUMER, Role.OPERATOR)
CODE_HITS = 50  # code-search answers at most this many codes
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in library messages


# --- pages ---------------------------------------------------------------------------------

def _fragment(viewer: Viewer, template: str, **context: Any) -> str:
    return TEMPLATES.env.get_template(template).render(
        viewer=viewer, _=viewer.t, t=viewer.t, lang=viewer.t.lang, prefix=PREFIX, **context)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _form(request: Request, viewer: Viewer, values: Values, chosen: list[str],
          errors: Mapping[str, str] | None = None, code: int = 200, **extra: Any) -> Response:
    hub = get_hub(request)
    with hub.sessions() as session:
        rows = node_service.list_nodes(session, limit=500, offset=0)
    return render(request, viewer, "builder.html", status_code=code,
                  title=viewer.t("New study"), values=values, chosen=chosen, nodes=rows,
                  errors=errors or {}, labels={k: label(k, viewer.t) for k in errors or {}},
                  analyses=ANALYSES, fields={n: params_of(n) for n in ANALYSES},
                  labels_of=PARAM_LABELS, hints=HINTS, examples=example_datasets(),
                  tables=[n for n in ANALYSES if registry.get(n).uses_table],
                  cohortless={n: o.cohortless for n, o in ANALYSES.items()
                              if not uses_cohort(registry.get(n))},
                  purposes=studies.PURPOSES, kinds=EVENT_KINDS, ops=OPS, rows=range(ROWS),
                  groups=GROUPS, column_params=COLUMN_PARAMS,
                  examples_columns=json.dumps({k: v[2] for k, v in example_datasets().items()}),
                  **extra)


@router.get("/studies/new", response_class=HTMLResponse)
def new_study(request: Request, from_: int | None = Query(None, alias="from"),
              viewer: Viewer = Depends(page(*BUILDERS))) -> Response:
    if from_ is None:
        return _form(request, viewer, defaults(), [])
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        with hub.sessions() as session:
            view = studies.get_study(session, hub.clock, viewer.principal, from_)
    except HealthspaceError as exc:
        return render(request, viewer, "error.html", status_code=exc.status_code,
                      title=viewer.t("New study"), message=exc.message)
    values, skipped = values_from_study(view)
    notice = viewer.t("Started from study {id}.", id=from_) + (" " + viewer.t(
        "Parts of its cohort do not fit this form and were left out.") if skipped else "")
    return _form(request, viewer, values, view.nodes, notice=notice)


@router.post("/studies/new", response_class=HTMLResponse)
async def build(request: Request, viewer: Viewer = Depends(page(*BUILDERS))) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "nodes"}
    chosen = [n for n in form.getlist("nodes") if isinstance(n, str)]
    return await run_in_threadpool(_act, request, viewer, values, chosen)


def _act(request: Request, viewer: Viewer, values: Values, chosen: list[str]) -> Response:
    check_csrf(viewer, values.get("csrf"))
    action = values.get("action", "submit")
    hub, principal, code = get_hub(request), viewer.principal, 422
    assert principal is not None
    spec, errors = spec_from(values, chosen, viewer.t, preview=action == "preview")
    if spec is not None:
        try:
            with hub.sessions() as session:
                if action == "check":
                    checked = studies.check(session, hub.clock, principal, spec)
                    decisions = {n: d.model_dump(mode="json") for n, d in checked.nodes.items()}
                    if not _wants_json(request):
                        return _form(request, viewer, values, chosen, decisions=decisions)
                    return JSONResponse({"ok": True, "html": _fragment(
                        viewer, "builder_check.html", decisions=decisions)})
                view, woken = studies.submit(session, hub.clock, hub.settings, principal, spec)
        except HealthspaceError as exc:
            key = field_key(exc.field, spec.analysis, values.get("dataset_choice") == "custom")
            errors, code = {key: str(exc)}, exc.status_code
        else:
            hub.notifier.notify(*(node_topic(n) for n in woken))
            if action != "preview":
                return RedirectResponse(f"{PREFIX}/studies/{view.id}", status_code=303)
            if _wants_json(request):
                return JSONResponse({"ok": True, **_preview_json(viewer, view)}, 201)
            return RedirectResponse(f"{PREFIX}/studies/new/preview/{view.id}", status_code=303)
    errors = {k: _ESCAPES.sub("", v) for k, v in errors.items()}  # formulaic colours its own
    if _wants_json(request):
        return JSONResponse({"ok": False, "errors": errors}, status_code=code)
    return _form(request, viewer, values, chosen, errors, code=code)


def _preview(hub: HubState, viewer: Viewer, study_id: int) -> StudyView:
    assert viewer.principal is not None
    with hub.sessions() as session:
        view = studies.get_study(session, hub.clock, viewer.principal, study_id)
    if view.result is not None:  # a released (obfuscated) count read is on the record too
        hub.audit.record(viewer.principal.name, "study.result_access", f"study:{study_id}",
                         {"status": str(view.status), "via": "console builder"})
    return view


def _preview_ctx(view: StudyView) -> dict[str, Any]:
    """What builder_preview.html shows: the study, each node's last task, rate-limited nodes."""
    limited = sorted(node for node, d in view.decisions.items()
                     if any(r.get("code") == "rate_limited" for r in d.get("reasons", [])))
    return {"study": view, "tasks": {task.node: task for task in view.tasks},
            "limited": limited}


def _preview_json(viewer: Viewer, view: StudyView, level: int = 3) -> dict[str, Any]:
    return {"id": view.id, "status": str(view.status), "terminal": view.status.terminal,
            "status_url": f"{PREFIX}/studies/new/preview/{view.id}/status?level={level}",
            "html": _fragment(viewer, "builder_preview.html", level=level,
                              **_preview_ctx(view))}


@router.get("/studies/new/preview/{study_id}", response_class=HTMLResponse)
def preview_page(study_id: int, request: Request,
                 viewer: Viewer = Depends(page(*BUILDERS))) -> Response:
    try:
        view = _preview(get_hub(request), viewer, study_id)
    except HealthspaceError as exc:
        return render(request, viewer, "error.html", status_code=exc.status_code,
                      title=viewer.t("Feasibility preview"), message=exc.message)
    return render(request, viewer, "builder_result.html", **_preview_ctx(view),
                  title=viewer.t("Feasibility preview #{id}", id=study_id),
                  cohort_json=json.dumps(view.cohort, indent=2, ensure_ascii=False))


@router.get("/studies/new/preview/{study_id}/status")
def preview_status(study_id: int, request: Request, level: int = Query(3, ge=2, le=3),
                   viewer: Viewer = Depends(page(*BUILDERS))) -> JSONResponse:
    try:
        view = _preview(get_hub(request), viewer, study_id)
    except HealthspaceError as exc:
        return JSONResponse({"ok": False, "message": exc.message}, exc.status_code)
    return JSONResponse({"ok": True, **_preview_json(viewer, view, level)})


@router.get("/studies/new/codes")
def code_search(request: Request, q: str = Query("", max_length=100),
                vocab: str = Query("", max_length=40), node: list[str] = Query([]),
                viewer: Viewer = Depends(page(*BUILDERS))) -> JSONResponse:
    """Codes the nodes published (``Catalog.vocabularies``) starting with ``q``."""
    q = q.strip().rstrip("%")
    if ":" in q and not vocab:
        vocab, q = q.split(":", 1)
    found: dict[tuple[str, str], set[str]] = {}
    if q or vocab:
        with get_hub(request).sessions() as session:
            rows = node_service.list_nodes(session, limit=500, offset=0)
        for row in rows:
            published = row.catalog.vocabularies if row.catalog else {}
            for vid, codes in published.items() if not node or row.name in node else ():
                if vocab and vid.lower() != vocab.strip().lower():
                    continue
                for code in codes:
                    if code.lower().startswith(q.lower()):
                        found.setdefault((vid, code), set()).add(row.name)
    hits = sorted(found)[:CODE_HITS]
    return JSONResponse({"query": q, "vocabulary": vocab or None,
                         "truncated": len(found) > CODE_HITS,
                         "codes": [{"code": f"{v}:{c}", "vocabulary": v, "concept_code": c,
                                    "nodes": sorted(found[v, c])} for v, c in hits]})
