"""Sign-in, sign-out, the language switch and the dashboard."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from healthspace.core.enums import Role
from healthspace.hub.console.i18n import LANGUAGES
from healthspace.hub.console.web import (
    COOKIE,
    LANG_COOKIE,
    PREFIX,
    SIGNIN_COOKIE,
    Viewer,
    check_csrf,
    current,
    page,
    render,
    safe_next,
    set_cookie,
)
from healthspace.hub.deps import get_hub
from healthspace.hub.services import approvals, console, kpi, sla, studies
from healthspace.hub.services.admission import ApprovalStatus

router = APIRouter()


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def root(request: Request) -> RedirectResponse:
    target = "/dashboard" if current(request).principal else "/sign-in"
    return RedirectResponse(PREFIX + target, status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, next: str | None = None) -> Response:
    viewer = current(request)
    if viewer.principal is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    form_token = secrets.token_urlsafe(24)
    response = render(request, viewer, "signin.html", form_token=form_token,
                      next=safe_next(next), error=None)
    set_cookie(response, request, SIGNIN_COOKIE, form_token, max_age=3600)
    return response


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request,
    form_token: str = Form(""),
    method: str = Form("token"),
    token: str = Form(""),
    name: str = Form(""),
    password: str = Form(""),
    next: str = Form(""),
) -> Response:
    viewer = current(request)
    expected = request.cookies.get(SIGNIN_COOKIE)
    hub = get_hub(request)
    error = None
    signed = None
    if not expected or not secrets.compare_digest(expected, form_token):
        error = viewer.t("The form expired. Reload the page and try again.")
    else:
        with hub.sessions() as session:
            if method == "password":
                signed = console.sign_in_password(session, hub.clock, name.strip(), password)
            else:
                signed = console.sign_in_token(session, hub.clock, token)
        if signed is None:
            error = viewer.t("Sign-in failed: check the token, or the name and password.")
    if signed is None:
        fresh = secrets.token_urlsafe(24)
        response = render(request, viewer, "signin.html", status_code=401, form_token=fresh,
                          next=safe_next(next), error=error, method=method, name=name)
        set_cookie(response, request, SIGNIN_COOKIE, fresh, max_age=3600)
        return response
    redirect = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(redirect, request, COOKIE, signed.secret, max_age=console.SESSION_HOURS * 3600)
    redirect.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return redirect


@router.post("/sign-out")
def sign_out(request: Request, csrf: str = Form(""),
             viewer: Viewer = Depends(page())) -> RedirectResponse:
    check_csrf(viewer, csrf)
    hub = get_hub(request)
    with hub.sessions() as session:
        console.sign_out(session, hub.clock, request.cookies.get(COOKIE))
    response = RedirectResponse(PREFIX + "/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


@router.post("/language")
def set_language(request: Request, lang: str = Form(...), next: str = Form("")) -> Response:
    """Switch the language (a preference cookie; no session needed, nothing changes state)."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        set_cookie(response, request, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


def _kpis(request: Request, viewer: Viewer) -> dict[str, Any] | None:
    if viewer.role not in (Role.OPERATOR, Role.AUDITOR):
        return None
    from healthspace.hub.routers.kpi import _ledger

    hub = get_hub(request)
    period = hub.clock.now().strftime("%Y-%m")
    with hub.sessions() as session:
        sla.sweep(session, hub.clock)
        return kpi.report(session, period, _ledger(session, hub), hub.settings.currency)


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    with hub.sessions() as session:
        recent = studies.list_studies(session, hub.clock, viewer.principal, status=None,
                                      limit=10, offset=0)
        pending = approvals.list_approvals(session, hub.clock, viewer.principal,
                                           ApprovalStatus.PENDING, limit=10, offset=0) \
            if viewer.role in (Role.OPERATOR, Role.DATA_HOLDER_ADMIN, Role.AUDITOR) else None
    return render(request, viewer, "dashboard.html", recent=recent, pending=pending,
                  kpi=_kpis(request, viewer))
