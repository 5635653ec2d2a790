"""Sign-in, sign-out, the language switch and the dashboard."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
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
from healthspace.hub.services.periods import previous

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


MONTHS = 6  # the dashboard's trend window
# (label, the KPI report's keys to the value, decimals): the tiles with a trend line.
TILES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("Total cost", ("cost", "total_cost"), 2),
    ("Cost per 1,000 records", ("cost", "unit_cost_per_1000_records"), 2),
    ("Studies", ("efficiency", "studies"), 0),
    ("Median approval turnaround (h)", ("efficiency", "approval_turnaround_hours", "p50"), 1),
    ("Studies completed", ("value", "studies_completed"), 0),
    ("Node refusals", ("safety", "node_refusals"), 0),
    ("ε spent", ("safety", "dp_epsilon_spent"), 2),
)
SPARK_W, SPARK_H = 120.0, 28.0


@dataclass(frozen=True)
class Tile:
    """A KPI tile: this month's value, the months before it, the change on last month."""

    label: str
    digits: int
    series: tuple[tuple[str, float | None], ...]  # (YYYY-MM, value), oldest first

    @property
    def value(self) -> float | None:
        return self.series[-1][1]

    @property
    def change_pct(self) -> float | None:
        now, before = self.series[-1][1], self.series[-2][1] if len(self.series) > 1 else None
        if now is None or not before:
            return None
        return round(100 * (now - before) / before, 1)

    @property
    def points(self) -> str:
        """The sparkline's SVG polyline points (a missing month is drawn as 0)."""
        values = [v or 0.0 for _, v in self.series]
        top = max(values) or 1.0
        step = SPARK_W / max(len(values) - 1, 1)
        return " ".join(f"{i * step:.1f},{SPARK_H - 2 - (SPARK_H - 4) * v / top:.1f}"
                        for i, v in enumerate(values))

    @property
    def last_point(self) -> tuple[str, str]:
        x, y = self.points.rsplit(" ", 1)[-1].split(",")
        return x, y


def _dig(report: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    found: Any = report
    for key in keys:
        found = found.get(key) if isinstance(found, dict) else None
    return float(found) if isinstance(found, int | float) else None


def _kpis(request: Request, viewer: Viewer) -> dict[str, Any] | None:
    """This month's KPI report (the API's) and a tile per KPI over the last MONTHS months."""
    if viewer.role not in (Role.OPERATOR, Role.AUDITOR):
        return None
    from healthspace.hub.routers.kpi import _ledger

    hub = get_hub(request)
    periods = [hub.clock.now().strftime("%Y-%m")]
    while len(periods) < MONTHS:
        periods.insert(0, previous(periods[0]))
    with hub.sessions() as session:
        sla.sweep(session, hub.clock)
        ledger = _ledger(session, hub)
        reports = [kpi.report(session, p, ledger, hub.settings.currency) for p in periods]
    tiles = [Tile(label, digits, tuple((r["period"], _dig(r, keys)) for r in reports))
             for label, keys, digits in TILES]
    return {**reports[-1], "tiles": tiles}


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
