"""Node work: hand out hub-signed tasks (with redelivery), accept signed results once, advance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from nacl.signing import SigningKey
from sqlalchemy import bindparam, case, select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.core.envelope import Envelope, sign_assignment
from healthspace.core.errors import Forbidden, NotFound
from healthspace.core.models import TaskAck, TaskAssignment, TaskResult
from healthspace.hub.db.models import (
    Node,
    Organisation,
    SecaggSession,
    Study,
    StudyApproval,
    StudyNode,
    Task,
    User,
)
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


class _Claim(NamedTuple):
    """The claimable task's columns (a claim reads no ORM objects: it runs on every poll)."""

    id: int
    status: str
    study_id: int
    round: int
    node: str


# The poll and result paths' reads, built once (see tokens._PRINCIPAL).
_CLAIMABLE = (
    select(Task.id, Task.status, Task.study_id, Task.round, Node.name)
    .join(Study, Study.id == Task.study_id)
    .join(Node, Node.id == Task.node_id)
    .where(Task.node_id == bindparam("node_id"), Task.status.in_(OPEN),
           Study.status == StudyStatus.RUNNING)
    .order_by(case((Task.status == TaskStatus.RUNNING, 0), else_=1), Task.queued_at, Task.id)
    .limit(1)
)
_ASSIGNMENT = (
    select(Task.round_input, Task.min_cell_size, Task.secagg_session_id, Study.analysis,
           Study.params, Study.cohort, Study.dataset, Study.purpose, Study.created_at,
           Study.preview, User.name, Organisation.name, StudyNode.policy_version,
           StudyNode.node_id, Study.registry_ref)
    .join(Study, Study.id == Task.study_id)
    .join(User, User.id == Study.submitted_by)
    .join(Organisation, Organisation.id == User.org_id)
    .outerjoin(StudyNode, (StudyNode.study_id == Task.study_id)
               & (StudyNode.node_id == Task.node_id))
    .where(Task.id == bindparam("task_id"))
)
_APPROVALS = (
    select(StudyApproval)
    .where(StudyApproval.study_id == bindparam("study_id"),
           StudyApproval.node_id == bindparam("node_id"))
    .order_by(StudyApproval.id)
)
# Compare-and-set a task to running: a first claim stamps its start, a redelivery does not.
_CLAIM = (update(Task).where(Task.id == bindparam("task_id"), Task.status == TaskStatus.QUEUED)
          .values(status=TaskStatus.RUNNING, attempts=Task.attempts + 1,
                  started_at=bindparam("now", type_=Task.started_at.type)))
_REDELIVER = (update(Task).where(Task.id == bindparam("task_id"),
                                 Task.status == TaskStatus.RUNNING)
              .values(attempts=Task.attempts + 1))
_FINISH = (
    update(Task)
    .where(Task.id == bindparam("task_id"), Task.status.in_(OPEN))
    .values(status=bindparam("status"), error=bindparam("error"),
            metrics=bindparam("metrics", type_=Task.metrics.type),
            started_at=bindparam("started_at", type_=Task.started_at.type),
            finished_at=bindparam("finished_at", type_=Task.finished_at.type),
            envelope_id=bindparam("envelope_id"))
)
_RESULT_TASK = (
    select(Task.node_id, Task.study_id, Task.round, Task.status, Task.started_at,
           Node.name, Study.analysis, Study.status, Study.purpose)
    .join(Node, Node.id == Task.node_id).join(Study, Study.id == Task.study_id)
    .where(Task.id == bindparam("task_id"))
)


def _assignment(session: Session, claim: _Claim, node_id: int, key: SigningKey
                ) -> TaskAssignment:
    """The task as the node receives it, signed by the hub over every other field."""
    row = session.execute(_ASSIGNMENT, {"task_id": claim.id}).one()
    (round_input, min_cell_size, secagg_id, analysis, params, cohort, dataset, purpose,
     created_at, preview, consumer, consumer_org, policy_version, target, registry_ref) = row
    records = []
    if target is not None:
        approvals_of_node = session.scalars(
            _APPROVALS, {"study_id": claim.study_id, "node_id": node_id})
        records = [approval_record(a) for a in approvals_of_node]
    secure = None
    if secagg_id is not None:
        secure = secagg.secure_round(session.get(SecaggSession, secagg_id))
    assignment = TaskAssignment(
        task_id=claim.id,
        study_id=claim.study_id,
        round=claim.round,
        analysis=analysis,
        params=params,
        cohort=cohort,
        dataset=dataset,
        registry=registry_ref,
        round_input=round_input,
        purpose=purpose,
        min_cell_size=min_cell_size,
        consumer=consumer,
        consumer_org=consumer_org,
        submitted_at=created_at,
        approvals=records,
        policy_version=policy_version,
        preview=preview,
        secure=secure,
    )
    signature = sign_assignment(assignment.model_dump(mode="json"), key)
    return assignment.model_copy(update={"hub_signature": signature})


def _first(session: Session, node_id: int) -> _Claim | None:
    """This node's running task (redelivered first), else its oldest queued one."""
    row = session.execute(_CLAIMABLE, {"node_id": node_id}).first()
    return _Claim(*row) if row is not None else None


def _bump(session: Session, claim: _Claim, clock: Clock) -> bool:
    """Compare-and-set the task to running; False if another poller got there first."""
    first = TaskStatus(claim.status) == TaskStatus.QUEUED
    if first:
        changed = rowcount(session, _CLAIM, {"task_id": claim.id, "now": clock.now()})
    else:
        changed = rowcount(session, _REDELIVER, {"task_id": claim.id})
    if changed and first:
        timeline.record(session, clock.now(), claim.study_id, "task_started", claim.node,
                        round=claim.round)
    return bool(changed)


def next_task(session: Session, clock: Clock, node_id: int) -> TaskAssignment | None:
    """Redeliver this node's running task (it restarted and lost it), else claim the oldest queued.

    Tasks of studies that are not running (awaiting approval, cancelled) are never handed out.
    Expired approvals are swept first, so a study they unblock can start right away.
    """
    approvals.sweep(session, clock)
    for _ in range(5):  # a lost compare-and-set race just means: look again
        claim = _first(session, node_id)
        if claim is None:
            break
        if _bump(session, claim, clock):
            session.commit()
            return _assignment(session, claim, node_id, hub_keys.signing_key(session))
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
    row = session.execute(_RESULT_TASK, {"task_id": task_id}).first()
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
    changed = rowcount(session, _FINISH, {
        "task_id": task_id, "status": str(result.status), "error": result.error,
        "metrics": result.metrics.model_dump(mode="json"), "started_at": started_at or now,
        "finished_at": now, "envelope_id": stored.id})
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
