"""Node work: hand out hub-signed tasks (with redelivery), accept signed results once, advance."""

from __future__ import annotations

from nacl.signing import SigningKey
from sqlalchemy import select, update
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
    secagg,
    timeline,
)
from healthspace.hub.services.rounds import advance
from healthspace.hub.services.views import approval_record
from healthspace.hub.settings import HubSettings

OPEN = (TaskStatus.QUEUED, TaskStatus.RUNNING)


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


def _first(session: Session, node_id: int, status: TaskStatus) -> Task | None:
    return session.scalar(
        select(Task)
        .join(Study, Study.id == Task.study_id)
        .where(Task.node_id == node_id, Task.status == status, Study.status == StudyStatus.RUNNING)
        .order_by(Task.queued_at, Task.id)
        .limit(1)
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
        for status in (TaskStatus.RUNNING, TaskStatus.QUEUED):
            task = _first(session, node_id, status)
            if task is not None and _bump(session, task, status, clock):
                session.commit()
                session.refresh(task)
                return _assignment(session, task, hub_keys.signing_key(session))
        if _first(session, node_id, TaskStatus.QUEUED) is None:
            break
    session.commit()
    return None


def record_result(
    session: Session, clock: Clock, settings: HubSettings, node_id: int, task_id: int,
    envelope: Envelope,
) -> tuple[TaskAck, int, list[int]]:
    """Verify and store a node's signed answer once; returns the ack, the study id and node ids
    given new work. A repeat (new envelope, task already terminal) is acknowledged as duplicate.
    """
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if task.node_id != node_id:
        raise Forbidden(f"task {task_id} is not assigned to this node")
    study_id, round_, node_name = task.study_id, task.round, task.node.name
    stored = envelopes.accept(
        session, clock, node_id, envelope, kind="task.result", study_id=study_id, round=round_
    )
    result = envelopes.payload_as(envelope, TaskResult)
    meter = metering.parse(envelope, result, task.study.analysis)
    live = not StudyStatus(task.study.status).terminal
    duplicate = TaskAck(task_id=task_id, accepted=True, duplicate=True)
    if TaskStatus(task.status).terminal:  # a retry of an answer we already have
        session.commit()  # the envelope is kept, and its nonce spent
        return duplicate, study_id, []
    now = clock.now()
    changed = rowcount(
        session,
        update(Task)
        .where(Task.id == task_id, Task.status.in_(OPEN))
        .values(
            status=result.status,
            error=result.error,
            metrics=result.metrics.model_dump(mode="json"),
            started_at=task.started_at or now,
            finished_at=now,
            envelope_id=stored.id,
        ),
    )
    session.execute(update(Node).where(Node.id == node_id).values(last_seen_at=now))
    if changed:
        timeline.record(session, now, study_id, "task_finished", node_name,
                        round=round_, status=str(result.status))
        audit.queue(session, node_name, "task.result", audit.task_subject(study_id, round_,
                                                                          task_id),
                    {"status": str(result.status), "envelope_id": stored.id,
                     "payload_digest": envelope.payload_digest})
        if meter is not None:
            metering.record(session, now, task, meter, stored.id)
    session.commit()
    if not changed:  # a concurrent retry won the race
        return duplicate, study_id, []
    woken = advance(session, clock, settings, study_id, round_) if live else []
    return TaskAck(task_id=task_id, accepted=live), study_id, woken
