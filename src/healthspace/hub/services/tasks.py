"""Node work: hand out hub-signed tasks (with redelivery), accept signed results once, advance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from nacl.signing import SigningKey
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.core.envelope import Envelope, sign_assignment
from healthspace.core.errors import Forbidden, NotFound
from healthspace.core.models import TaskAck, TaskAssignment, TaskResult
from healthspace.hub.db.models import Node, Study, StudyNode, Task
from healthspace.hub.db.session import rowcount
from healthspace.hub.services import (
    approvals,
    audit,
    envelopes,
    hub_keys,
    metering,
    nodes,
    secagg,
    timeline,
)
from healthspace.hub.services.rounds import STILL, advance
from healthspace.hub.services.views import approval_record
from healthspace.hub.settings import HubSettings

OPEN = (TaskStatus.QUEUED, TaskStatus.RUNNING)


class Recorded(NamedTuple):
    """A stored result: the ack, its study, whether that closed the round (the study's
    status or round changed: its long-pollers are woken) and the nodes given new tasks."""

    ack: TaskAck
    study_id: int
    moved: bool = False
    woken: Sequence[int] = ()


def _assignment(session: Session, task: Task, key: SigningKey) -> TaskAssignment:
    """The task as the node receives it, signed by the hub over every other field."""
    study = task.study
    target = session.get(StudyNode, (study.id, task.node_id))
    assignment = TaskAssignment(
        task_id=task.id,
        study_id=study.id,
        round=task.round,
        analysis=study.analysis,
        params=study.params,
        cohort=study.cohort,
        dataset=study.dataset,
        round_input=task.round_input,
        purpose=study.purpose,
        min_cell_size=task.min_cell_size,
        consumer=study.submitter.name,
        consumer_org=study.submitter.org.name,
        submitted_at=study.created_at,
        approvals=[approval_record(a) for a in target.approvals] if target else [],
        policy_version=target.policy_version if target else None,
        preview=study.preview,
        secure=secagg.secure_round(task.secagg_session),
    )
    signature = sign_assignment(assignment.model_dump(mode="json"), key)
    return assignment.model_copy(update={"hub_signature": signature})


def _first(session: Session, node_id: int) -> Task | None:
    """This node's running task (redelivered first), else its oldest queued one."""
    return session.scalar(
        select(Task)
        .join(Study, Study.id == Task.study_id)
        .where(Task.node_id == node_id, Task.status.in_(OPEN), Study.status == StudyStatus.RUNNING)
        .order_by(case((Task.status == TaskStatus.RUNNING, 0), else_=1), Task.queued_at, Task.id)
        .limit(1)
        .execution_options(populate_existing=True)  # a lost race re-reads the row
    )


def _bump(session: Session, task: Task, expected: TaskStatus, clock: Clock) -> bool:
    """Compare-and-set the task to running; False if another poller got there first."""
    values: dict[str, object] = {"status": TaskStatus.RUNNING, "attempts": Task.attempts + 1}
    if expected == TaskStatus.QUEUED:
        values["started_at"] = clock.now()
    changed = rowcount(
        session,
        update(Task).where(Task.id == task.id, Task.status == expected).values(**values),
    )
    if changed and expected == TaskStatus.QUEUED:
        timeline.record(session, clock.now(), task.study_id, "task_started", task.node.name,
                        round=task.round)
    return bool(changed)


def next_task(session: Session, clock: Clock, node_id: int) -> TaskAssignment | None:
    """Redeliver this node's running task (it restarted and lost it), else claim the oldest queued.

    Tasks of studies that are not running (awaiting approval, cancelled) are never handed out.
    Expired approvals are swept first, so a study they unblock can start right away.
    """
    approvals.sweep(session, clock)
    for _ in range(5):  # a lost compare-and-set race just means: look again
        task = _first(session, node_id)
        if task is None:
            break
        if _bump(session, task, TaskStatus(task.status), clock):
            session.commit()
            return _assignment(session, task, hub_keys.signing_key(session))
    session.commit()
    return None


def record_result(
    session: Session, clock: Clock, settings: HubSettings, node_id: int, task_id: int,
    envelope: Envelope,
) -> Recorded:
    """Verify and store a node's signed answer once. A repeat (new envelope, task already
    terminal) is acknowledged as duplicate.

    Everything that only reads (the task, the signature, the payload's shape, its metering)
    is checked before the first write, so the write transaction is short: on SQLite writers queue.
    """
    row = session.execute(
        select(Task.node_id, Task.study_id, Task.round, Task.status, Task.started_at,
               Node.name, Study.analysis, Study.status, Study.purpose)
        .join(Node, Node.id == Task.node_id).join(Study, Study.id == Task.study_id)
        .where(Task.id == task_id)
    ).first()
    if row is None:
        raise NotFound(f"task {task_id} not found")
    (owner, study_id, round_, task_status, started_at, node_name, analysis, study_status,
     purpose) = row
    if owner != node_id:
        raise Forbidden(f"task {task_id} is not assigned to this node")
    verified = envelopes.verify(
        session, clock, node_id, envelope, kind="task.result", study_id=study_id, round=round_
    )
    result = envelopes.payload_as(envelope, TaskResult)
    meter = metering.parse(envelope, result, analysis)
    live = not StudyStatus(study_status).terminal
    stored = envelopes.store(session, clock, verified)
    duplicate = Recorded(TaskAck(task_id=task_id, accepted=True, duplicate=True), study_id)
    if TaskStatus(task_status).terminal:  # a retry of an answer we already have
        session.commit()  # the envelope is kept, and its nonce spent
        return duplicate
    now = clock.now()
    changed = rowcount(
        session,
        update(Task)
        .where(Task.id == task_id, Task.status.in_(OPEN))
        .values(
            status=result.status,
            error=result.error,
            metrics=result.metrics.model_dump(mode="json"),
            started_at=started_at or now,
            finished_at=now,
            envelope_id=stored.id,
        ),
    )
    nodes.seen(session, clock, node_id)
    if changed:
        timeline.record(session, now, study_id, "task_finished", node_name,
                        round=round_, status=str(result.status))
        audit.queue(session, node_name, "task.result", audit.task_subject(study_id, round_,
                                                                          task_id),
                    {"status": str(result.status), "envelope_id": stored.id,
                     "payload_digest": envelope.payload_digest})
        if meter is not None:
            ref = metering.TaskRef(task_id, study_id, node_id, node_name, round_, purpose)
            metering.record(session, now, ref, meter, stored.id)
    session.commit()
    if not changed:  # a concurrent retry won the race
        return duplicate
    moved, woken = advance(session, clock, settings, study_id, round_) if live else STILL
    return Recorded(TaskAck(task_id=task_id, accepted=live), study_id, moved, woken)
