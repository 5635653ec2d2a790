"""Round time-outs: a node that does not answer in time is dropped, the study goes on.

A study submitted with ``round_timeout_seconds`` fails every task still queued or running
that long after it was queued ("timed out"); the round then closes with the nodes that
answered (a secure round is rerun without the missing ones), as for any failed node.
Swept lazily whenever nodes poll or anyone reads a study, so no timer thread is needed.

The same sweep closes rounds whose every task is already terminal but which are still open:
a round is closed in its own transaction after the last result's, so a hub killed (or a
database locked past its busy timeout) between the two leaves such a round behind; closing
is idempotent, so doing it again on the next poll loses and duplicates nothing.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.hub.db.models import Study, Task
from healthspace.hub.db.session import rowcount
from healthspace.hub.services import audit, timeline
from healthspace.hub.services.rounds import advance
from healthspace.hub.services.throttle import Throttle
from healthspace.hub.settings import HubSettings

OPEN = (TaskStatus.QUEUED, TaskStatus.RUNNING)


def stalled(session: Session) -> set[tuple[int, int]]:
    """(study, round) of running studies whose current round has tasks and none still open."""
    in_round = (Task.study_id == Study.id) & (Task.round == Study.round)
    has_tasks = select(Task.id).where(in_round).exists()
    has_open = select(Task.id).where(in_round, Task.status.in_(OPEN)).exists()
    rows = session.execute(
        select(Study.id, Study.round).where(Study.status == StudyStatus.RUNNING, has_tasks,
                                            ~has_open)
    ).all()
    return {(study_id, round_) for study_id, round_ in rows}


_THROTTLE = Throttle()


def sweep(session: Session, clock: Clock, settings: HubSettings) -> list[int]:
    """Fail overdue tasks of running studies and close their rounds, and close rounds left
    open by an interrupted close; returns node ids given new tasks. At most once per second
    of the hub's clock (:mod:`healthspace.hub.services.throttle`)."""
    if not _THROTTLE.due(session, clock):
        return []
    now = clock.now()
    overdue = session.execute(
        select(Task.id, Task.study_id, Task.round, Task.queued_at, Study.round_timeout_seconds)
        .join(Study, Study.id == Task.study_id)
        .where(Study.status == StudyStatus.RUNNING, Study.round_timeout_seconds.is_not(None),
               Task.status.in_(OPEN), Task.round == Study.round)
    ).all()
    closed: set[tuple[int, int]] = set()
    for task_id, study_id, round_, queued_at, timeout in overdue:
        if timeout is None or queued_at + timedelta(seconds=int(timeout)) > now:
            continue
        task = session.get(Task, task_id)
        assert task is not None
        changed = rowcount(session, update(Task).where(Task.id == task_id,
                                                       Task.status.in_(OPEN))
                           .values(status=TaskStatus.FAILED, finished_at=now,
                                   error=f"timed out: no answer {timeout} s after the round "
                                         "was queued; the node is dropped from the study"))
        if changed:
            timeline.record(session, now, study_id, "task_timed_out", task.node.name,
                            round=round_, timeout_seconds=int(timeout))
            audit.queue(session, "hub", "task.timed_out", f"study:{study_id}",
                        {"node": task.node.name, "round": round_})
            closed.add((study_id, round_))
    session.commit()
    closed |= stalled(session)
    woken: list[int] = []
    for study_id, round_ in sorted(closed):
        woken += advance(session, clock, settings, study_id, round_).woken
    return woken
