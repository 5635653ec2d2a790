"""Metering and billing: meter records, monthly statements, consumers' prepaid accounts."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.core.errors import Forbidden, NotFound
from healthspace.core.metering import AccountUpdate, AccountView, MeterList, Statement
from healthspace.governance.pricing import money
from healthspace.hub.auth import require, require_user
from healthspace.hub.db.models import Organisation
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import MAX_ID, Page, page
from healthspace.hub.services import billing, metering, statements

router = APIRouter(tags=["billing"])

METER_SCOPE = ("consumer: its own studies; data_holder_admin: its own nodes; "
               "operator, auditor: all")
STATEMENT_SCOPE = ("consumer: its organisation's invoice; data_holder_admin: its "
                   "organisation's earnings; operator, auditor: any")
PeriodQ = Query(None, description="a month, YYYY-MM (UTC)")


@router.get("/meter", response_model=MeterList)
def list_meter(
    study_id: int | None = Query(None, ge=1, le=MAX_ID),
    node: str | None = Query(None, max_length=64),
    period: str | None = PeriodQ,
    principal: Principal = Depends(require_user(note=METER_SCOPE)),
    session: Session = Depends(get_session),
    p: Page = Depends(page),
) -> MeterList:
    """Meter records (one per task) and their totals over every matching record."""
    return metering.list_records(session, principal, study_id=study_id, node=node,
                                 period=period, limit=p.limit, offset=p.offset)


@router.get("/billing/statement", response_model=Statement)
def statement(
    period: str = Query(..., description="a month, YYYY-MM (UTC)"),
    org: str | None = Query(None, max_length=64, description="default: your organisation"),
    kind: Literal["invoice", "earnings", "platform"] | None = Query(
        None, description="default: invoice for consumers, earnings for data holders, "
                          "platform for the operator"),
    principal: Principal = Depends(require_user(note=STATEMENT_SCOPE)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> Statement:
    return statements.statement(session, hub.settings, principal, org, period, kind)


def _org(session: Session, name: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        raise NotFound(f"organisation {name!r} not found", field="org")
    return org


def _account_view(session: Session, hub: HubState, org: Organisation) -> AccountView:
    f = billing.account_figures(session, org)
    return AccountView(
        org=org.name, currency=hub.settings.currency, prepaid=money(f.prepaid),
        credit_limit=money(f.credit_limit), invoiced=money(f.invoiced),
        reserved=money(f.reserved), available=money(f.available), updated_at=f.updated_at,
    )


@router.get("/billing/accounts/{org}", response_model=AccountView)
def get_account(
    org: str,
    principal: Principal = Depends(require_user(note="its own organisation; operator, "
                                                      "auditor: any")),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> AccountView:
    found = _org(session, org)
    if not principal.has_role(Role.OPERATOR, Role.AUDITOR) and principal.org_id != found.id:
        raise Forbidden(f"you may read your own organisation's account only, not {org!r}",
                        field="org")
    return _account_view(session, hub, found)


@router.put("/billing/accounts/{org}", response_model=AccountView)
def set_account(
    org: str,
    spec: AccountUpdate,
    principal: Principal = Depends(require(Role.OPERATOR)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> AccountView:
    """Add a prepaid deposit and/or set the credit limit; a limited account is checked at
    every submission."""
    found = _org(session, org)
    billing.set_account(session, hub.clock.now(), found, deposit=spec.deposit,
                        credit_limit=spec.credit_limit, by=principal.name)
    session.commit()
    return _account_view(session, hub, found)
