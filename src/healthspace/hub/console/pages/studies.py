"""Studies: the list the viewer may see and one study's timeline, tasks and result."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from healthspace.core.enums import StudyStatus
from healthspace.core.errors import HealthspaceError
from healthspace.hub.console.web import Viewer, page, render
from healthspace.hub.deps import get_hub
from healthspace.hub.services import studies

router = APIRouter()


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


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_detail(study_id: int, request: Request,
                 viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        with hub.sessions() as session:
            view = studies.get_study(session, hub.clock, viewer.principal, study_id)
    except HealthspaceError as exc:
        return render(request, viewer, "error.html", status_code=exc.status_code,
                      title=viewer.t("Study {id}", id=study_id), message=exc.message)
    if view.result is not None:
        hub.audit.record(viewer.principal.name, "study.result_access", f"study:{study_id}",
                         {"status": str(view.status), "via": "console"})
    return render(request, viewer, "study.html",
                  title=viewer.t("Study {id}", id=study_id) + (f": {view.title}"
                                                               if view.title else ""),
                  study=view, result_json=json.dumps(view.result, indent=2, ensure_ascii=False)
                  if view.result is not None else None,
                  delivered_json=json.dumps(view.delivered, indent=2, ensure_ascii=False)
                  if view.delivered else None)
