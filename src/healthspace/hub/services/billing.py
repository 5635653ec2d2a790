"""Pricing at admission, quota checks, settlement of finished studies, and accounts.

Rules (docs/metering.md):

* A study's price is fixed when it is submitted: each target node's policy prices are kept on
  its study row. Its *estimate* (the most it may cost: every person in the node's catalogue,
  the ε it asks for) is reserved against the consumer organisation's quota until it settles;
  a study whose estimate exceeds what is left (prepaid + credit limit − invoiced − reserved)
  is refused before it runs, with the figures.
* A study that completes (or completes partially) settles at once, in the same transaction:
  each node whose tasks completed is priced on its measured usage — persons contributing
  (the largest count over rounds: the same persons each round), compute seconds, ε — at its
  own prices and purpose rate. The platform keeps ``platform_fee_rate`` of each line; the
  data holder earns the rest, so invoiced = earned + fee exactly, in cents.
* Contribution points: each settled study hands out 100 points among its nodes in
  proportion to persons contributing (records scanned when no node reports persons; equal
  shares when neither does).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from healthspace.core.enums import TERMINAL_STUDY_STATUSES, TaskStatus
from healthspace.core.errors import QuotaExceeded
from healthspace.governance.engine import ADMITTED
from healthspace.governance.policy import UsagePolicy
from healthspace.governance.pricing import (
    Usage,
    cents,
    load_prices,
    money,
    price,
    split_fee,
)
from healthspace.hub.db.models import (
    BillingAccount,
    MeterRecord,
    Node,
    Organisation,
    Settlement,
    SettlementLine,
    Study,
    StudyNode,
    User,
)
from healthspace.hub.services import audit
from healthspace.hub.services.nodes import holds_persons
from healthspace.hub.services.periods import period_of
from healthspace.hub.settings import HubSettings


def snapshot(row: StudyNode, policy: UsagePolicy) -> None:
    """Keep the policy's prices and service levels on a new study's node row."""
    row.prices = policy.prices
    row.sla = policy.sla


def _catalog_persons(node: Node) -> int:
    """The persons in the node's published catalogue (rounded to 100): the most it can bill."""
    if not holds_persons(node):
        return 0
    return int(((node.catalog or {}).get("tables") or {}).get("person") or 0)


def _epsilon(study: Study, policy: UsagePolicy) -> float:
    if study.preview:
        rules = policy.preview_rules
        return float(rules.epsilon or 0) if rules.mode == "dp" else 0.0
    return float(study.params.get("dp_epsilon") or 0)


def estimate(study: Study, rows: list[StudyNode], policies: dict[int, UsagePolicy]) -> int:
    """The most ``study`` may cost, in cents, over the nodes that may take part.

    Compute seconds are unknown before a run and are billed as measured on top.
    """
    total = 0
    for row in rows:
        if row.decision not in ADMITTED:
            continue
        usage = Usage(persons=_catalog_persons(row.node), epsilon=_epsilon(
            study, policies[row.node_id]), preview=study.preview)
        total += price(load_prices(row.prices), usage, study.purpose).total
    return total


def _invoiced(session: Session, org_id: int) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(Settlement.invoiced_cents), 0))
                              .where(Settlement.consumer_org_id == org_id)) or 0)


def _reserved(session: Session, org_id: int, exclude: int | None = None) -> int:
    query = (select(func.coalesce(func.sum(Study.estimate_cents), 0))
             .join(User, User.id == Study.submitted_by)
             .where(User.org_id == org_id, Study.status.not_in(TERMINAL_STUDY_STATUSES)))
    if exclude is not None:
        query = query.where(Study.id != exclude)
    return int(session.scalar(query) or 0)


def reserve(session: Session, settings: HubSettings, study: Study, rows: list[StudyNode],
            policies: dict[int, UsagePolicy]) -> None:
    """Reserve the study's estimate, or raise QuotaExceeded with the figures.

    Organisations without an account are not limited (they settle on invoice).
    """
    study.estimate_cents = estimate(study, rows, policies)
    org_id = study.submitter.org_id
    # Row lock (PostgreSQL): concurrent submissions of one organisation check in turn. OF the
    # account's own table: the eagerly joined organisation sits on an outer join's nullable
    # side, which PostgreSQL will not lock.
    account = session.get(BillingAccount, org_id, with_for_update={"of": BillingAccount})
    if account is None or study.estimate_cents == 0:
        return
    invoiced, reserved = _invoiced(session, org_id), _reserved(session, org_id, study.id)
    left = account.prepaid_cents + account.credit_limit_cents - invoiced - reserved
    if study.estimate_cents > left:
        c = settings.currency
        raise QuotaExceeded(
            f"the study may cost up to {c} {money(study.estimate_cents):,.2f} but "
            f"{study.submitter.org.name} has {c} {money(max(left, 0)):,.2f} left (prepaid "
            f"{money(account.prepaid_cents):,.2f} + credit limit "
            f"{money(account.credit_limit_cents):,.2f} − invoiced {money(invoiced):,.2f} − "
            f"reserved for running studies {money(reserved):,.2f})", field="quota")


def _points(usages: dict[int, Usage]) -> dict[int, float]:
    """100 points per study, shared by persons, else records scanned, else equally."""
    for key in ("persons", "records_scanned"):
        weights = {n: float(getattr(u, key)) for n, u in usages.items()}
        total = sum(weights.values())
        if total > 0:
            return {n: round(100 * w / total, 4) for n, w in weights.items()}
    return {n: round(100 / len(usages), 4) for n in usages} if usages else {}


def usage_by_node(session: Session, study: Study) -> dict[int, Usage]:
    """Each node's measured usage over its completed tasks of ``study``."""
    rows = session.scalars(select(MeterRecord).where(
        MeterRecord.study_id == study.id, MeterRecord.status == TaskStatus.COMPLETED))
    grouped: dict[int, list[MeterRecord]] = defaultdict(list)
    for r in rows:
        grouped[r.node_id].append(r)
    return {
        node_id: Usage(
            persons=max(r.persons for r in records),
            persons_band=max((r.persons_band or 0) for r in records) or None,
            seconds=sum(r.seconds for r in records),
            epsilon=sum(r.epsilon for r in records),
            records_scanned=sum(r.records_scanned for r in records),
            preview=study.preview,
        )
        for node_id, records in grouped.items()
    }


def settle(session: Session, at: datetime, settings: HubSettings, study: Study) -> None:
    """Invoice a finished study once, credit its data holders, and put it on the ledger."""
    if session.scalar(select(Settlement.id).where(Settlement.study_id == study.id)):
        return
    usages = usage_by_node(session, study)
    points = _points(usages)
    targets = {r.node_id: r for r in session.scalars(
        select(StudyNode).where(StudyNode.study_id == study.id))}
    period = period_of(at)
    settlement = Settlement(
        study_id=study.id, consumer_org_id=study.submitter.org_id, period=period,
        settled_at=at, currency=settings.currency, fee_rate=settings.platform_fee_rate,
        invoiced_cents=0, fee_cents=0, earned_cents=0,
    )
    session.add(settlement)
    session.flush()
    entry = []
    for node_id in sorted(usages):
        usage, row = usages[node_id], targets.get(node_id)
        charge = price(load_prices(row.prices if row else None), usage, study.purpose)
        fee, earned = split_fee(charge.total, settings.platform_fee_rate)
        node = session.get(Node, node_id)
        assert node is not None
        session.add(SettlementLine(
            settlement_id=settlement.id, study_id=study.id, node_id=node_id,
            holder_org_id=node.org_id, period=period,
            usage={"persons": usage.persons, "persons_band": usage.persons_band,
                   "seconds": round(usage.seconds, 6),
                   "epsilon": usage.epsilon, "records_scanned": usage.records_scanned,
                   "preview": usage.preview},
            lines=charge.lines, rate=charge.rate, points=points[node_id],
            charge_cents=charge.total, fee_cents=fee, earned_cents=earned,
        ))
        settlement.invoiced_cents += charge.total
        settlement.fee_cents += fee
        settlement.earned_cents += earned
        entry.append({"node": node.name, "holder": node.org.name, "charge_cents": charge.total,
                      "fee_cents": fee, "earned_cents": earned, "points": points[node_id]})
    audit.queue(session, "hub", "billing.settle", f"study:{study.id}",
                {"period": period, "currency": settings.currency,
                 "consumer_org": study.submitter.org.name,
                 "invoiced_cents": settlement.invoiced_cents,
                 "fee_cents": settlement.fee_cents, "earned_cents": settlement.earned_cents,
                 "lines": entry})


def set_account(session: Session, at: datetime, org: Organisation, *, deposit: float | None,
                credit_limit: float | None, by: str) -> BillingAccount:
    """Add a deposit and/or set the credit limit of ``org``'s account (created on first use)."""
    account = session.get(BillingAccount, org.id)
    if account is None:
        account = BillingAccount(org_id=org.id, prepaid_cents=0, credit_limit_cents=0,
                                 updated_at=at)
        session.add(account)
    if deposit is not None:
        account.prepaid_cents += cents(Decimal(str(deposit)))
    if credit_limit is not None:
        account.credit_limit_cents = cents(Decimal(str(credit_limit)))
    account.updated_at = at
    audit.queue(session, by, "billing.account", f"org:{org.name}",
                {"deposit_cents": cents(Decimal(str(deposit))) if deposit else 0,
                 "prepaid_cents": account.prepaid_cents,
                 "credit_limit_cents": account.credit_limit_cents})
    return account


@dataclass(frozen=True)
class AccountFigures:
    """A consumer organisation's account, in cents."""

    prepaid: int
    credit_limit: int
    invoiced: int
    reserved: int
    updated_at: datetime | None

    @property
    def available(self) -> int:
        return self.prepaid + self.credit_limit - self.invoiced - self.reserved


def account_figures(session: Session, org: Organisation) -> AccountFigures:
    account = session.get(BillingAccount, org.id)
    return AccountFigures(
        prepaid=account.prepaid_cents if account else 0,
        credit_limit=account.credit_limit_cents if account else 0,
        invoiced=_invoiced(session, org.id), reserved=_reserved(session, org.id),
        updated_at=account.updated_at if account else None,
    )
