"""KPI reports and service-level breaches, for the operator and auditors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.hub.auth import require
from healthspace.hub.db.models import SlaBreach, Study
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.services import kpi, sla
from healthspace.hub.services.periods import month_range

router = APIRouter(tags=["kpi"])
READERS = (Role.OPERATOR, Role.AUDITOR)


def _ledger(session: Session, hub: HubState) -> dict[str, Any]:
    """The ledger's verification: whole at most every ``ledger_full_check_seconds``, else
    resumed over what was appended since (hub/services/ledger_check.py)."""
    return hub.ledger_check.report(session, hub.audit, hub.clock.now())


@router.get("/kpi", response_model=dict[str, Any])
def kpi_report(
    period: str = Query(..., description="a month, YYYY-MM (UTC)"),
    principal: Principal = Depends(require(*READERS)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> dict[str, Any]:
    """Cost, efficiency, value and safety KPIs of one month (docs/metering.md#kpis)."""
    month_range(period)
    sla.sweep(session, hub.clock)
    return kpi.report(session, period, _ledger(session, hub), hub.settings.currency)


@router.get("/sla/breaches", response_model=list[dict[str, Any]])
def breaches(
    period: str | None = Query(None, description="a month, YYYY-MM (UTC); default: all"),
    principal: Principal = Depends(require(*READERS)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> list[dict[str, Any]]:
    """Missed service-level targets (detected now, with the hub's clock, and before)."""
    sla.sweep(session, hub.clock)
    query = select(SlaBreach).order_by(SlaBreach.id)
    if period is not None:
        start, end = month_range(period)
        query = query.where(SlaBreach.detected_at >= start, SlaBreach.detected_at < end)
    out = []
    for b in session.scalars(query):
        study = session.get(Study, b.study_id)
        out.append({"study_id": b.study_id, "title": study.title if study else None,
                    "node": b.node.name, "kind": b.kind, "target_seconds": b.target_seconds,
                    "actual_seconds": round(b.actual_seconds, 3), "open": b.open,
                    "detected_at": b.detected_at})
    return out
