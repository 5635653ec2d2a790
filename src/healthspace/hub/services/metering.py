"""Meter records: each task's signed meter, checked against its envelope, stored and listed.

The node measures; the hub re-checks what it can (the status and analysis match the task,
the byte count matches the payload it received) and keeps the meter with a ledger entry.
Who sees which records: operators and auditors all; a data holder's admins those of its own
nodes; a consumer those of the studies it submitted.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from pydantic import ValidationError
from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session

from healthspace.core.canonical import canonical_json
from healthspace.core.enums import Role, TaskStatus
from healthspace.core.envelope import Envelope
from healthspace.core.errors import InvalidInput, invalid_from_validation
from healthspace.core.metering import Meter, MeterList, MeterRecordView
from healthspace.core.models import TaskResult
from healthspace.hub.db.models import MeterRecord, Node, Study, User
from healthspace.hub.principal import Principal
from healthspace.hub.services import audit
from healthspace.hub.services.periods import month_range

TOTALS = ("records_scanned", "persons", "seconds", "bytes", "epsilon")


def parse(envelope: Envelope, result: TaskResult, analysis: str) -> Meter | None:
    """The envelope's meter, checked against the result it travels with (None: no meter)."""
    if envelope.meter is None:
        return None
    try:
        meter = Meter.model_validate(envelope.meter)
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix=("meter",)) from exc
    if meter.status != result.status:
        raise InvalidInput(f"the meter says {meter.status}, the result {result.status}",
                           field="meter.status")
    if meter.analysis != analysis:
        raise InvalidInput(f"the meter is for {meter.analysis!r}, the task runs {analysis!r}",
                           field="meter.analysis")
    sent = len(canonical_json(envelope.payload))
    if meter.bytes != sent:
        raise InvalidInput(f"the meter counts {meter.bytes} bytes; the payload has {sent}",
                           field="meter.bytes")
    return meter


class TaskRef(NamedTuple):
    """The task a meter belongs to, as the result path already read it."""

    id: int
    study_id: int
    node_id: int
    node: str
    round: int
    purpose: str  # its study's


def record(session: Session, at: datetime, task: TaskRef, meter: Meter,
           envelope_id: int) -> None:
    """Store a task's meter and put it on the ledger (the caller commits)."""
    session.add(MeterRecord(
        study_id=task.study_id, task_id=task.id, node_id=task.node_id, round=task.round,
        analysis=meter.analysis, purpose=task.purpose, preview=meter.preview,
        status=str(meter.status), records_scanned=meter.records_scanned,
        persons=meter.persons, persons_band=meter.persons_band, seconds=meter.seconds,
        bytes=meter.bytes, epsilon=meter.epsilon, envelope_id=envelope_id, recorded_at=at,
    ))
    audit.queue(session, task.node, "meter.record",
                audit.task_subject(task.study_id, task.round, task.id),
                {**meter.model_dump(mode="json"), "envelope_id": envelope_id})


def meter_of(row: MeterRecord) -> Meter:
    return Meter(
        analysis=row.analysis, status=TaskStatus(row.status), preview=row.preview,
        records_scanned=row.records_scanned, persons=row.persons,
        persons_band=row.persons_band, seconds=row.seconds, bytes=row.bytes,
        epsilon=row.epsilon,
    )


def visible(principal: Principal) -> Select[MeterRecord]:
    query = select(MeterRecord).join(Study, Study.id == MeterRecord.study_id)
    if principal.has_role(Role.OPERATOR, Role.AUDITOR):
        return query
    if principal.role == Role.DATA_HOLDER_ADMIN:
        own = select(Node.id).where(Node.org_id == principal.org_id)
        return query.where(MeterRecord.node_id.in_(own))
    if principal.role == Role.CONSUMER:
        return query.where(Study.submitted_by == principal.id)
    return query.where(false())


def list_records(
    session: Session, principal: Principal, *, study_id: int | None, node: str | None,
    period: str | None, limit: int, offset: int,
) -> MeterList:
    query = visible(principal)
    if study_id is not None:
        query = query.where(MeterRecord.study_id == study_id)
    if node is not None:
        found = session.scalar(select(Node.id).where(Node.name == node))
        if found is None:
            raise InvalidInput(f"unknown node {node!r}", field="node")
        query = query.where(MeterRecord.node_id == found)
    if period is not None:
        start, end = month_range(period)
        query = query.where(MeterRecord.recorded_at >= start, MeterRecord.recorded_at < end)
    rows = list(session.scalars(query.order_by(MeterRecord.id)))
    totals = {key: float(sum(getattr(r, key) for r in rows)) for key in TOTALS}
    totals["records"] = float(len(rows))
    page = rows[offset:offset + limit]
    submitters = dict(session.execute(select(Study.id, Study.submitted_by).where(
        Study.id.in_({r.study_id for r in page}))).all())
    users = {u.id: u for u in session.scalars(
        select(User).where(User.id.in_(set(submitters.values()))))}
    return MeterList(records=[_view(r, users[submitters[r.study_id]]) for r in page],
                     totals=totals)


def _view(row: MeterRecord, consumer: User) -> MeterRecordView:
    return MeterRecordView(
        id=row.id, study_id=row.study_id, task_id=row.task_id, round=row.round,
        node=row.node.name, holder=row.node.org.name, consumer=consumer.name,
        consumer_org=consumer.org.name, purpose=row.purpose, recorded_at=row.recorded_at,
        meter=meter_of(row),
    )
