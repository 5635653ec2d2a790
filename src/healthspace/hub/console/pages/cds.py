"""The "Similar patients" page (clinical decision support): a patient's profile, the
treatments and outcomes to compare, submitted as the signed-in consumer's
``similar_patients`` study — the StudySpec ``healthspace cds lookup`` submits. The result
is shown on the study's page (``result_similar_patients.html``)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from healthspace.analyses.similar_lookup import PRESETS
from healthspace.core.enums import Role
from healthspace.core.errors import HealthspaceError
from healthspace.hub.console import cds_form
from healthspace.hub.console.web import PREFIX, Viewer, check_csrf, page, render
from healthspace.hub.deps import get_hub
from healthspace.hub.notifier import node_topic
from healthspace.hub.services import nodes as node_service
from healthspace.hub.services import studies

router = APIRouter()
USERS = (Role.CONSUMER, Role.OPERATOR)
PATH = "/similar-patients"


def _form(request: Request, viewer: Viewer, values: Mapping[str, str], ticked: list[str],
          chosen: list[str], errors: Mapping[str, str] | None = None, code: int = 200,
          notice: str | None = None) -> Response:
    with get_hub(request).sessions() as session:
        rows = node_service.list_nodes(session, limit=500, offset=0)
    errors = dict(errors or {})
    return render(request, viewer, "cds.html", status_code=code,
                  title=viewer.t("Similar patients"), values=values, ticked=ticked,
                  chosen=chosen, nodes=rows, presets=PRESETS, errors=errors, notice=notice,
                  labels={k: viewer.t(cds_form.LABELS.get(k, k)) for k in errors})


@router.get(PATH, response_class=HTMLResponse)
def lookup_form(request: Request, example: bool = False,
                viewer: Viewer = Depends(page(*USERS))) -> Response:
    if not example:
        return _form(request, viewer, cds_form.defaults(), [], [])
    values, ticked, chosen = cds_form.values_from(cds_form.example())
    return _form(request, viewer, values, ticked, chosen,
                 notice=viewer.t("Filled in with the worked example: a man of 62 with type 2 "
                                 "diabetes on metformin."))


@router.post(PATH, response_class=HTMLResponse)
async def submit_lookup(request: Request, viewer: Viewer = Depends(page(*USERS))) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)
              and k not in ("nodes", "presets")}
    chosen = [n for n in form.getlist("nodes") if isinstance(n, str)]
    ticked = [n for n in form.getlist("presets") if isinstance(n, str)]
    return await run_in_threadpool(_submit, request, viewer, values, ticked, chosen)


def _submit(request: Request, viewer: Viewer, values: dict[str, str], ticked: list[str],
            chosen: list[str]) -> Response:
    check_csrf(viewer, values.get("csrf"))
    hub, principal, code = get_hub(request), viewer.principal, 422
    assert principal is not None
    spec, errors = cds_form.spec_from(values, ticked, chosen, viewer.t)
    if spec is not None:
        try:
            with hub.sessions() as session:
                view, woken = studies.submit(session, hub.clock, hub.settings, principal, spec)
        except HealthspaceError as exc:
            errors, code = {cds_form.field_key(exc.field): cds_form.message(exc)}, \
                exc.status_code
        else:
            hub.notifier.notify(*(node_topic(n) for n in woken))
            return RedirectResponse(f"{PREFIX}/studies/{view.id}", status_code=303)
    return _form(request, viewer, values, ticked, chosen, errors, code=code)
