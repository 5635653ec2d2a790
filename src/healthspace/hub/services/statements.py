"""Statements for a month: a consumer's invoice, a data holder's earnings, the platform's view.

Every line is one study × data holder of a settlement settled in the period. Totals are sums
of integer cents, so an invoice's total is the sum of its lines, and over the platform
money in (invoiced) = money out (earned) + the platform fee, exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.enums import DATA_HOLDER_KINDS, OrgKind, Role
from healthspace.core.errors import Forbidden, InvalidInput
from healthspace.core.metering import Statement, StatementLine
from healthspace.governance.pricing import money
from healthspace.hub.db.models import Organisation, Settlement, SettlementLine, Study
from healthspace.hub.principal import Principal
from healthspace.hub.services.periods import month_range
from healthspace.hub.settings import HubSettings

Kind = Literal["invoice", "earnings", "platform"]


def default_kind(org: Organisation) -> Kind:
    if org.kind == OrgKind.OPERATOR:
        return "platform"
    return "earnings" if OrgKind(org.kind) in DATA_HOLDER_KINDS else "invoice"


def _authorise(principal: Principal, org: Organisation, kind: Kind) -> None:
    if principal.has_role(Role.OPERATOR, Role.AUDITOR):
        return
    if principal.org_id != org.id:
        raise Forbidden(f"you may read statements of your own organisation only, not "
                        f"{org.name!r}", field="org")
    allowed = {Role.CONSUMER: "invoice", Role.DATA_HOLDER_ADMIN: "earnings"}
    if principal.role is None or allowed.get(principal.role) != kind:
        raise Forbidden(f"a {principal.role} may not read the {kind} statement", field="kind")


def _line(line: SettlementLine, settlement: Settlement, title: str | None, purpose: str
          ) -> StatementLine:
    usage = line.usage
    return StatementLine(
        study_id=line.study_id, title=title, settled_at=settlement.settled_at,
        consumer_org=settlement.consumer_org.name, holder=line.holder_org.name,
        node=line.node.name, purpose=purpose,
        persons=int(usage.get("persons", 0)), persons_band=usage.get("persons_band"),
        compute_seconds=float(usage.get("seconds", 0)),
        epsilon=float(usage.get("epsilon", 0)),
        records_scanned=int(usage.get("records_scanned", 0)), points=line.points,
        rate=line.rate, charge=money(line.charge_cents), platform_fee=money(line.fee_cents),
        earned=money(line.earned_cents),
    )


def statement(
    session: Session, settings: HubSettings, principal: Principal, org_name: str | None,
    period: str, kind: Kind | None = None, study_id: int | None = None,
) -> Statement:
    """``org_name``'s statement of ``period`` (``kind``: its default for the organisation);
    ``study_id`` keeps only that study's lines (and totals over them)."""
    org_name = org_name or principal.org
    org = session.scalar(select(Organisation).where(Organisation.name == org_name))
    if org is None:
        raise InvalidInput(f"unknown organisation {org_name!r}", field="org")
    kind = kind or default_kind(org)
    _authorise(principal, org, kind)
    month_range(period)  # a malformed period is a 422 naming the field
    query = (select(SettlementLine, Settlement)
             .join(Settlement, Settlement.id == SettlementLine.settlement_id)
             .where(SettlementLine.period == period))
    if kind == "invoice":
        query = query.where(Settlement.consumer_org_id == org.id)
    elif kind == "earnings":
        query = query.where(SettlementLine.holder_org_id == org.id)
    if study_id is not None:
        query = query.where(SettlementLine.study_id == study_id)
    rows = session.execute(query.order_by(Settlement.settled_at, SettlementLine.id)).all()
    studies = {sid: (title, purpose) for sid, title, purpose in session.execute(
        select(Study.id, Study.title, Study.purpose).where(
            Study.id.in_({line.study_id for line, _ in rows})))}
    charge = sum(line.charge_cents for line, _ in rows)
    fee = sum(line.fee_cents for line, _ in rows)
    earned = sum(line.earned_cents for line, _ in rows)
    totals: dict[str, Any] = {
        "studies": len({line.study_id for line, _ in rows}),
        "lines": len(rows),
        "invoiced": money(charge), "platform_fee": money(fee), "earned": money(earned),
        "invoiced_cents": charge, "platform_fee_cents": fee, "earned_cents": earned,
        "balanced": charge == fee + earned,
        "points": round(sum(line.points for line, _ in rows), 4),
        "persons": sum(int(line.usage.get("persons", 0)) for line, _ in rows),
    }
    if kind == "platform":
        totals["by_consumer"] = _subtotals(rows, lambda ln, s: s.consumer_org.name, "charge")
        totals["by_holder"] = _subtotals(rows, lambda ln, s: ln.holder_org.name, "earned")
    return Statement(kind=kind, org=org.name, period=period, currency=settings.currency,
                     fee_rate=settings.platform_fee_rate,
                     lines=[_line(line, s, *studies[line.study_id]) for line, s in rows],
                     totals=totals)


def _subtotals(rows: Sequence[Any], key: Any, field: str) -> dict[str, float]:
    sums: dict[str, int] = defaultdict(int)
    for line, settlement in rows:
        sums[key(line, settlement)] += line.charge_cents if field == "charge" \
            else line.earned_cents
    return {name: money(value) for name, value in sorted(sums.items())}

