"""The KPI report for a month, in the four families payers and hospitals use.

* **cost** — total invoiced, records used (scanned), unit sharing cost = total cost per
  1,000 records used, cost per contributing person, and the trend against the previous month.
* **efficiency** — approval turnaround (submission → the node's decision) and time to result
  (start → finish), p50 and p95; success rate = completed / (completed + partial + failed).
* **value** — studies completed by purpose, models deployed (``model.deploy`` ledger
  entries), consumers served, data holders credited and what they earned.
* **safety** — denials by reason code, node refusals at run time, ε spent (by consumer
  organisation), the hub ledger's verification, and incidents (SLA breaches, failed tasks,
  secure-aggregation reruns).

Studies (with their denials, incidents and SLA breaches) count in the month they were
submitted; money in the month it was settled; meter records in the month they were recorded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, lazyload, load_only, selectinload

from healthspace.core.clock import iso
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.governance.pricing import money
from healthspace.hub.db.models import (
    MeterRecord,
    Organisation,
    Settlement,
    SettlementLine,
    SlaBreach,
    Study,
    StudyApproval,
    StudyEvent,
    StudyNode,
    Task,
    User,
)
from healthspace.hub.services.periods import month_range, previous
from healthspace.ledger.sqla_store import LEDGER_ENTRIES


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _cost(session: Session, period: str) -> dict[str, Any]:
    start, end = month_range(period)
    invoiced = int(session.scalar(select(func.coalesce(func.sum(Settlement.invoiced_cents), 0))
                                  .where(Settlement.period == period)) or 0)
    # Rows are read again every round; persons are the same persons every round, so each
    # study × node counts its largest round (as settlement does).
    per_node = (
        select(func.sum(MeterRecord.records_scanned).label("records"),
               func.max(MeterRecord.persons).label("persons"))
        .where(MeterRecord.recorded_at >= start, MeterRecord.recorded_at < end,
               MeterRecord.status == TaskStatus.COMPLETED)
        .group_by(MeterRecord.study_id, MeterRecord.node_id).subquery())
    records, persons = session.execute(
        select(func.coalesce(func.sum(per_node.c.records), 0),
               func.coalesce(func.sum(per_node.c.persons), 0))).one()
    unit = money(invoiced) / (int(records) / 1000) if records else None
    return {"total_cost": money(invoiced), "records_used": int(records),
            "persons_contributing": int(persons),
            "unit_cost_per_1000_records": round(unit, 4) if unit is not None else None,
            "cost_per_person": round(money(invoiced) / int(persons), 4) if persons else None}


def _trend(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or before == 0:
        return None
    return round(100 * (now - before) / before, 2)


def _studies(session: Session, period: str) -> list[Study]:
    start, end = month_range(period)
    # Only the node rows are needed; a study's tasks and timeline stay unloaded.
    return list(session.scalars(select(Study).options(
        load_only(Study.id, Study.status, Study.purpose, Study.created_at, Study.finished_at,
                  Study.submitted_by),
        lazyload(Study.tasks), lazyload(Study.events), lazyload(Study.feedback),
        # a target's node (its catalog and policy documents) is not needed: only its id
        selectinload(Study.targets).options(
            load_only(StudyNode.study_id, StudyNode.node_id, StudyNode.approval),
            lazyload(StudyNode.node))).where(Study.created_at >= start,
                                           Study.created_at < end)))


def _efficiency(session: Session, studies: list[Study]) -> dict[str, Any]:
    turnaround: list[float] = []
    to_result: list[float] = []
    ids = [s.id for s in studies]
    decided = dict(session.execute(
        select(StudyApproval.study_id.concat(":").concat(StudyApproval.node_id),
               func.max(StudyApproval.at))
        .where(StudyApproval.study_id.in_(ids))
        .group_by(StudyApproval.study_id, StudyApproval.node_id)).all())
    started = dict(session.execute(
        select(StudyEvent.study_id, func.min(StudyEvent.at))
        .where(StudyEvent.study_id.in_(ids), StudyEvent.event == "started")
        .group_by(StudyEvent.study_id)).all())
    for study in studies:
        for row in study.targets:
            at = decided.get(f"{study.id}:{row.node_id}")
            if row.approval in ("approved", "rejected") and at is not None:
                turnaround.append((at - study.created_at).total_seconds() / 3600)
        if study.status in (StudyStatus.COMPLETED, StudyStatus.PARTIAL) and study.finished_at \
                and study.id in started:
            to_result.append((study.finished_at - started[study.id]).total_seconds() / 60)
    counts = Counter(StudyStatus(s.status) for s in studies)
    ended = counts[StudyStatus.COMPLETED] + counts[StudyStatus.PARTIAL] + \
        counts[StudyStatus.FAILED]
    return {
        "studies": len(studies),
        "by_status": {str(k): v for k, v in sorted(counts.items())},
        "approval_turnaround_hours": {"p50": _pct(turnaround, 50), "p95": _pct(turnaround, 95),
                                      "n": len(turnaround)},
        "time_to_result_minutes": {"p50": _pct(to_result, 50), "p95": _pct(to_result, 95),
                                   "n": len(to_result)},
        "success_rate": round(counts[StudyStatus.COMPLETED] / ended, 4) if ended else None,
    }


def _value(session: Session, period: str, studies: list[Study]) -> dict[str, Any]:
    start, end = month_range(period)
    done = [s for s in studies if s.status in (StudyStatus.COMPLETED, StudyStatus.PARTIAL)]
    by_purpose = Counter(s.purpose for s in done)
    consumers = {s.submitter.org.name for s in done}
    t = LEDGER_ENTRIES.c
    deployed = int(session.scalar(select(func.count()).select_from(LEDGER_ENTRIES).where(
        t.action == "model.deploy", t.time >= iso(start), t.time < iso(end))) or 0)
    earned = dict(session.execute(
        select(Organisation.name, func.sum(SettlementLine.earned_cents))
        .join(Organisation, Organisation.id == SettlementLine.holder_org_id)
        .where(SettlementLine.period == period).group_by(Organisation.name)).all())
    return {"studies_completed": len(done),
            "completed_by_purpose": dict(sorted(by_purpose.items())),
            "models_deployed": deployed, "consumers_served": len(consumers),
            "data_holders_credited": len(earned),
            "earned_by_holder": {k: money(int(v)) for k, v in sorted(earned.items())}}


def _safety(session: Session, period: str, studies: list[Study],
            ledger: dict[str, Any]) -> dict[str, Any]:
    start, end = month_range(period)
    ids = [s.id for s in studies]
    denials: Counter[str] = Counter()
    for row in session.scalars(select(StudyNode).where(StudyNode.study_id.in_(ids),
                                                       StudyNode.decision == "deny")):
        for reason in row.reasons or []:
            denials[str(reason.get("code"))] += 1
    # A node refusal is the node's signed answer; a node the hub's pre-check denied also
    # gets a refused task, but no envelope: that one is counted in denials_by_reason.
    tasks = Counter(str(t) for t in session.scalars(
        select(Task.status).where(Task.study_id.in_(ids), or_(
            Task.status == TaskStatus.FAILED,
            and_(Task.status == TaskStatus.REFUSED, Task.envelope_id.is_not(None))))))
    eps: dict[str, float] = defaultdict(float)
    rows = session.execute(
        select(User.org_id, MeterRecord.epsilon, Study.submitted_by)
        .join(Study, Study.id == MeterRecord.study_id).join(User, User.id == Study.submitted_by)
        .where(MeterRecord.recorded_at >= start, MeterRecord.recorded_at < end,
               MeterRecord.epsilon > 0)).all()
    users = {u.id: u for u in session.scalars(select(User).where(
        User.id.in_({r[2] for r in rows})))}
    for _org, epsilon, user_id in rows:
        eps[users[user_id].org.name] += float(epsilon)
    # By the study's month like the other incidents, not by when a sweep first saw the
    # breach (sweeps run on reads), so a month's report does not change with when it is read.
    breaches = Counter(b.kind for b in session.scalars(select(SlaBreach).where(
        SlaBreach.study_id.in_(ids))))
    reruns = int(session.scalar(select(func.count()).select_from(StudyEvent).where(
        StudyEvent.study_id.in_(ids), StudyEvent.event == "secure_rerun")) or 0)
    incidents = {"sla_breaches": sum(breaches.values()),
                 "failed_tasks": tasks.get(str(TaskStatus.FAILED), 0),
                 "secure_reruns": reruns}
    incidents["total"] = sum(incidents.values())
    return {"denials_by_reason": dict(sorted(denials.items())),
            "node_refusals": tasks.get(str(TaskStatus.REFUSED), 0),
            "dp_epsilon_spent": round(sum(eps.values()), 6),
            "dp_epsilon_by_consumer": {k: round(v, 6) for k, v in sorted(eps.items())},
            "sla_breaches_by_kind": dict(sorted(breaches.items())),
            "ledger": ledger, "incidents": incidents}


def report(session: Session, period: str, ledger: dict[str, Any], currency: str
           ) -> dict[str, Any]:
    """The KPI report for ``period`` (``YYYY-MM``); ``ledger`` is the hub ledger's verification."""
    studies = _studies(session, period)
    cost = _cost(session, period)
    before = _cost(session, previous(period))
    cost["previous"] = {"period": previous(period), "total_cost": before["total_cost"],
                        "unit_cost_per_1000_records": before["unit_cost_per_1000_records"]}
    cost["trend_pct"] = {
        "total_cost": _trend(cost["total_cost"], before["total_cost"]),
        "unit_cost_per_1000_records": _trend(cost["unit_cost_per_1000_records"],
                                             before["unit_cost_per_1000_records"]),
    }
    return {"period": period, "currency": currency, "cost": cost,
            "efficiency": _efficiency(session, studies),
            "value": _value(session, period, studies),
            "safety": _safety(session, period, studies, ledger)}
