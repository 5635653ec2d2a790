"""Billing: a month's statement (a consumer's invoice, a data holder's earnings, the
platform's summary), prepaid accounts, and the statement as CSV or JSON.

The statement is the API's (``statements.statement`` with the viewer's principal), so who may
read which organisation's statement is decided there; the downloads are that same object.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from urllib.parse import urlencode

from babel.dates import format_skeleton
from babel.numbers import format_currency, format_percent
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from healthspace.core.enums import OrgKind, Role
from healthspace.core.errors import HealthspaceError
from healthspace.core.metering import AccountUpdate, AccountView, Statement, StatementLine
from healthspace.hub.console.web import PREFIX, Viewer, check_csrf, page, render
from healthspace.hub.deps import HubState, get_hub
from healthspace.hub.routers.billing import _account_view
from healthspace.hub.services import billing, directory, statements
from healthspace.hub.services.periods import month_range, period_of, previous
from healthspace.hub.services.statements import Kind

router = APIRouter()
KINDS: dict[str, Kind] = {"invoice": "invoice", "earnings": "earnings", "platform": "platform"}
OVERSEERS = (Role.OPERATOR, Role.AUDITOR)
LINES_PER_PAGE = 100  # statement lines per page; the downloads hold them all


@dataclass(frozen=True)
class Choice:
    """What the viewer asked for: a month, and (operators, auditors) an organisation/kind."""

    period: str
    org: str | None
    kind: Kind | None

    def query(self, period: str | None = None) -> str:
        """The query string of this choice (in another month if ``period`` is given)."""
        fields = {"period": period or self.period, "org": self.org, "kind": self.kind}
        return urlencode({k: v for k, v in fields.items() if v})


def _choice(hub: HubState, period: str | None, org: str | None, kind: str | None) -> Choice:
    chosen = (period or "").strip() or period_of(hub.clock.now())
    return Choice(chosen, (org or "").strip() or None, KINDS.get(kind or ""))


def _next(period: str) -> str:
    _, end = month_range(period)
    return period_of(end)


class Money:
    """Amounts and rates in the viewer's language (CLDR currency and percent formats)."""

    def __init__(self, viewer: Viewer, currency: str) -> None:
        self.locale, self.currency = viewer.t.locale, currency

    def __call__(self, value: float | None) -> str:
        return "–" if value is None else format_currency(value, self.currency,
                                                         locale=self.locale)

    def percent(self, value: float) -> str:
        return format_percent(value, locale=self.locale)

    def month(self, period: str) -> str:
        start, _ = month_range(period)
        return format_skeleton("yMMMM", start, locale=self.locale)


def _accounts(session: Session, hub: HubState, viewer: Viewer) -> list[AccountView]:
    """Operators and auditors: every consumer organisation's account; a consumer: its own.
    (The API lets anyone read their own organisation's; only consumers have quotas.)"""
    assert viewer.principal is not None
    principal = viewer.principal
    if principal.has_role(*OVERSEERS):
        orgs = [directory.org_by_name(session, o.name) for o in
                directory.list_orgs(session, limit=500, offset=0) if o.kind == OrgKind.CONSUMER]
    elif principal.role == Role.CONSUMER:
        orgs = [directory.org_by_name(session, principal.org)]
    else:
        orgs = []
    return [_account_view(session, hub, org) for org in orgs]


def _page(request: Request, viewer: Viewer, choice: Choice, code: int = 200,
          problem: str | None = None, lines: int = 1) -> HTMLResponse:
    """The billing page; ``problem`` is a refused account form (shown above the statement)."""
    hub = get_hub(request)
    assert viewer.principal is not None
    statement: Statement | None = None
    error = problem
    with hub.sessions() as session:
        try:
            statement = statements.statement(session, hub.settings, viewer.principal,
                                             choice.org, choice.period, choice.kind)
        except HealthspaceError as exc:  # the API's refusal, with the API's status
            code, error = exc.status_code, exc.message
        accounts = _accounts(session, hub, viewer)
        overseer = viewer.principal.has_role(*OVERSEERS)
        orgs = [o.name for o in directory.list_orgs(session, limit=500, offset=0)] \
            if overseer else []
    money = Money(viewer, hub.settings.currency)
    valid = _is_period(choice.period)
    count = len(statement.lines) if statement is not None else 0
    pages = max(1, -(-count // LINES_PER_PAGE))
    shown = min(lines, pages)
    first = (shown - 1) * LINES_PER_PAGE
    return render(request, viewer, "billing.html", status_code=code,
                  title=viewer.t("Billing"), st=statement, choice=choice, error=error,
                  accounts=accounts, orgs=orgs, kinds=list(KINDS), money=money,
                  month=money.month(choice.period) if valid else choice.period,
                  earlier=previous(choice.period) if valid else None,
                  later=_next(choice.period) if valid else None,
                  overseer=overseer, operator=viewer.principal.is_operator,
                  shown_lines=statement.lines[first:first + LINES_PER_PAGE] if statement
                  else [], line_page=shown, line_pages=pages, line_first=first + 1,
                  line_last=min(first + LINES_PER_PAGE, count), line_count=count)


def _is_period(period: str) -> bool:
    try:
        month_range(period)
    except HealthspaceError:
        return False
    return True


@router.get("/billing", response_class=HTMLResponse)
def billing_page(request: Request, period: str | None = None, org: str | None = None,
                 kind: str | None = None, lines: int = Query(1, ge=1, le=100_000),
                 viewer: Viewer = Depends(page())) -> HTMLResponse:
    """``lines``: which page of LINES_PER_PAGE statement lines to show (the totals and the
    downloads are always the whole statement's)."""
    return _page(request, viewer, _choice(get_hub(request), period, org, kind), lines=lines)


def _statement(request: Request, viewer: Viewer, choice: Choice) -> Statement:
    hub = get_hub(request)
    assert viewer.principal is not None
    with hub.sessions() as session:
        return statements.statement(session, hub.settings, viewer.principal, choice.org,
                                    choice.period, choice.kind)


def statement_csv(st: Statement) -> str:
    """A row per statement line, the columns of the API's ``StatementLine`` (the CLI's
    ``--format csv``); amounts in the currency's major unit."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(StatementLine.model_fields),
                            lineterminator="\n")
    writer.writeheader()
    for line in st.lines:
        writer.writerow(line.model_dump(mode="json"))
    return buffer.getvalue()


@router.get("/billing/statement.{fmt}", response_model=None)
def download_statement(fmt: str, request: Request, period: str | None = None,
                       org: str | None = None, kind: str | None = None,
                       viewer: Viewer = Depends(page())) -> Response:
    choice = _choice(get_hub(request), period, org, kind)
    if fmt not in ("csv", "json"):
        return _page(request, viewer, choice, 404, viewer.t("Statements download as CSV or "
                                                            "JSON."))
    try:
        st = _statement(request, viewer, choice)
    except HealthspaceError:
        return _page(request, viewer, choice)  # renders the same refusal, with its status
    filename = f"{st.org}-{st.period}-{st.kind}.{fmt}"
    body, media = (statement_csv(st), "text/csv; charset=utf-8") if fmt == "csv" \
        else (st.model_dump_json(indent=2), "application/json")
    return Response(body, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _amount(text: str) -> float | None:
    cleaned = text.strip().replace(",", "")
    return float(cleaned) if cleaned else None


@router.post("/billing/accounts/{org}", response_class=HTMLResponse)
def set_account(org: str, request: Request, csrf: str = Form(""), deposit: str = Form(""),
                credit_limit: str = Form(""), period: str = Form(""),
                viewer: Viewer = Depends(page(Role.OPERATOR))) -> Response:
    """An operator adds a deposit and/or sets the credit limit (as ``PUT /billing/accounts``)."""
    check_csrf(viewer, csrf)
    hub = get_hub(request)
    assert viewer.principal is not None
    choice = _choice(hub, period, None, None)
    try:
        spec = AccountUpdate(deposit=_amount(deposit), credit_limit=_amount(credit_limit))
        if spec.deposit is None and spec.credit_limit is None:
            raise ValueError(viewer.t("Give a deposit, a credit limit or both."))
        with hub.sessions() as session:
            found = directory.org_by_name(session, org)
            billing.set_account(session, hub.clock.now(), found, deposit=spec.deposit,
                                credit_limit=spec.credit_limit, by=viewer.principal.name)
            session.commit()
    except (HealthspaceError, ValidationError, ValueError) as exc:
        return _page(request, viewer, choice, 422, _problem(viewer, exc))
    return RedirectResponse(f"{PREFIX}/billing?{choice.query()}&done=account",
                            status_code=303)


@router.get("/billing/accounts/{org}", response_class=RedirectResponse)
def account_page(org: str, period: str | None = None,
                 viewer: Viewer = Depends(page(Role.OPERATOR))) -> RedirectResponse:
    """A refused account form's address, opened again (the language switch, a reload): the
    billing page it came from."""
    query = f"?{urlencode({'period': period})}" if period else ""
    return RedirectResponse(f"{PREFIX}/billing{query}", status_code=303)


def _problem(viewer: Viewer, exc: Exception) -> str:
    if isinstance(exc, HealthspaceError):
        return exc.message
    if isinstance(exc, ValidationError):
        return viewer.t("A deposit must be more than 0 and a credit limit at least 0.")
    text = str(exc)
    return text if text and not text.startswith("could not convert") else viewer.t(
        "Amounts are numbers, such as 20000 or 1500.50.")
