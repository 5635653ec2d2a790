"""The approvals inbox: data-holder admins approve or reject studies for their nodes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from healthspace.core.enums import Role
from healthspace.core.errors import HealthspaceError
from healthspace.governance.engine import ApprovalStep
from healthspace.hub.console.web import PREFIX, Viewer, check_csrf, page, render
from healthspace.hub.deps import get_hub
from healthspace.hub.notifier import node_topic, study_topic
from healthspace.hub.schemas import ApproveSpec, RejectSpec
from healthspace.hub.services import approvals
from healthspace.hub.services.admission import ApprovalStatus

router = APIRouter()
DECIDERS = (Role.DATA_HOLDER_ADMIN, Role.OPERATOR)
SHOWN = ("pending", "approved", "rejected", "expired")


def _inbox(request: Request, viewer: Viewer, status: str, error: str | None = None,
           notice: str | None = None, code: int = 200) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    with hub.sessions() as session:
        rows = approvals.list_approvals(session, hub.clock, viewer.principal,
                                        ApprovalStatus(status), limit=200, offset=0)
    return render(request, viewer, "approvals.html", status_code=code,
                  title=viewer.t("Approvals"), rows=rows, status=status, shown=SHOWN,
                  error=error, notice=notice)


@router.get("/approvals", response_class=HTMLResponse)
def inbox(request: Request, status: str = "pending",
          viewer: Viewer = Depends(page(*DECIDERS))) -> HTMLResponse:
    return _inbox(request, viewer, status if status in SHOWN else "pending")


@router.post("/approvals/{study_id}/{node}/approve", response_class=HTMLResponse)
def approve(study_id: int, node: str, request: Request, csrf: str = Form(""),
            step: str = Form(""), comment: str = Form(""), ethics_ref: str = Form(""),
            viewer: Viewer = Depends(page(*DECIDERS))) -> Response:
    check_csrf(viewer, csrf)
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        spec = ApproveSpec(step=ApprovalStep(step) if step else None,
                           comment=comment.strip() or None,
                           ethics_ref=ethics_ref.strip() or None)
        with hub.sessions() as session:
            _, woken = approvals.approve(session, hub.clock, hub.settings, viewer.principal,
                                         study_id, node, spec)
    except (HealthspaceError, ValidationError, ValueError) as exc:
        message = exc.message if isinstance(exc, HealthspaceError) else str(exc)
        return _inbox(request, viewer, "pending", error=message, code=422)
    hub.notifier.notify(study_topic(study_id), *(node_topic(n) for n in woken))
    return RedirectResponse(f"{PREFIX}/approvals?done=approved", status_code=303)


@router.post("/approvals/{study_id}/{node}/reject", response_class=HTMLResponse)
def reject(study_id: int, node: str, request: Request, csrf: str = Form(""),
           comment: str = Form(""), viewer: Viewer = Depends(page(*DECIDERS))) -> Response:
    check_csrf(viewer, csrf)
    hub = get_hub(request)
    assert viewer.principal is not None
    if not comment.strip():
        return _inbox(request, viewer, "pending", code=422,
                      error=viewer.t("A rejection needs a comment: it is shown to the "
                                     "consumer."))
    try:
        with hub.sessions() as session:
            _, woken = approvals.reject(session, hub.clock, hub.settings, viewer.principal,
                                        study_id, node, RejectSpec(comment=comment.strip()))
    except (HealthspaceError, ValidationError) as exc:
        message = exc.message if isinstance(exc, HealthspaceError) else str(exc)
        return _inbox(request, viewer, "pending", error=message, code=422)
    hub.notifier.notify(study_topic(study_id), *(node_topic(n) for n in woken))
    return RedirectResponse(f"{PREFIX}/approvals?done=rejected", status_code=303)
