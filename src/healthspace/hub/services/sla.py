"""Service levels: hold each study to the targets its nodes' policies set when it was admitted.

Two targets (``governance.pricing.ServiceLevels``), per node:

* ``approval_hours`` — a study that needs this node's approval is decided (approved, rejected
  or expired) within this many hours of submission. A decision still pending past the target
  is a breach already (``open``), closed with the final figure when the decision comes.
* ``result_minutes`` — a study that started has its result (completed, partial or failed)
  within this many minutes of its start, i.e. of the last approval. A study still running
  past the target is an open breach.

A study cancelled while waiting for either closes its open breach (or records a closed one,
if the target had passed) with the time it was cancelled.

The sweep checks every study not yet finished and every finished one not yet checked, so
each breach is found once; it is recorded with a ``sla_breach`` timeline event, which puts
it on the audit ledger. The clock is the hub's, so tests move time by hand.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from healthspace.core.clock import Clock
from healthspace.core.enums import TERMINAL_STUDY_STATUSES, StudyStatus
from healthspace.governance.pricing import load_service_levels
from healthspace.hub.db.models import SlaBreach, Study, StudyApproval, StudyEvent, StudyNode
from healthspace.hub.services import timeline

log = logging.getLogger(__name__)
RESULT_STATUSES = (StudyStatus.COMPLETED, StudyStatus.PARTIAL, StudyStatus.FAILED)


def _decided_at(session: Session, study: Study, row: StudyNode) -> datetime | None:
    if row.approval in ("approved", "rejected"):
        at = session.scalar(select(func.max(StudyApproval.at)).where(
            StudyApproval.study_id == study.id, StudyApproval.node_id == row.node_id))
        return at if at is not None else study.updated_at
    if row.approval == "expired":
        return row.expires_at
    return None


def _started_at(session: Session, study_id: int) -> datetime | None:
    return session.scalar(select(func.min(StudyEvent.at)).where(
        StudyEvent.study_id == study_id, StudyEvent.event == "started"))


def measure(session: Session, study: Study, row: StudyNode, now: datetime
            ) -> list[dict[str, Any]]:
    """The breaches of one study at one node as of ``now`` (nothing is written)."""
    targets = load_service_levels(row.sla)
    found: list[dict[str, Any]] = []
    needs_approval = row.approval_mode not in (None, "auto") and row.approval != "not_required"
    if targets.approval_hours is not None and needs_approval:
        decided = _decided_at(session, study, row)
        if decided is None and StudyStatus(study.status).terminal:
            decided = study.finished_at or study.updated_at  # cancelled undecided: wait over
        still_open = decided is None and study.status == StudyStatus.AWAITING_APPROVAL
        if decided is not None or still_open:
            elapsed = ((decided or now) - study.created_at).total_seconds()
            if elapsed > targets.approval_hours * 3600:
                found.append({"kind": "approval", "target": targets.approval_hours * 3600,
                              "actual": elapsed, "open": decided is None})
    if targets.result_minutes is not None:
        started = _started_at(session, study.id)
        running = study.status == StudyStatus.RUNNING
        ended = study.status in RESULT_STATUSES or study.status == StudyStatus.CANCELLED
        if started is not None and (running or ended):
            end = now if running or study.finished_at is None else study.finished_at
            elapsed = (end - started).total_seconds()
            if elapsed > targets.result_minutes * 60:
                found.append({"kind": "result", "target": targets.result_minutes * 60,
                              "actual": elapsed, "open": running})
    return found


def _store(session: Session, now: datetime, study: Study, row: StudyNode,
           breach: dict[str, Any]) -> None:
    existing = session.scalar(select(SlaBreach).where(
        SlaBreach.study_id == study.id, SlaBreach.node_id == row.node_id,
        SlaBreach.kind == breach["kind"]))
    if existing is not None:
        if existing.open and not breach["open"]:  # decided or finished since: final figure
            existing.open, existing.actual_seconds = False, breach["actual"]
        return
    session.add(SlaBreach(study_id=study.id, node_id=row.node_id, kind=breach["kind"],
                          target_seconds=breach["target"], actual_seconds=breach["actual"],
                          open=breach["open"], detected_at=now))
    timeline.record(session, now, study.id, "sla_breach", row.node.name, kind=breach["kind"],
                    target_seconds=round(breach["target"], 3),
                    actual_seconds=round(breach["actual"], 3), open=breach["open"])


def sweep(session: Session, clock: Clock) -> int:
    """Record every new breach; returns how many studies were checked. Commits."""
    now = clock.now()
    due = list(session.scalars(select(Study).options(selectinload(Study.targets)).where(or_(
        Study.status.not_in(TERMINAL_STUDY_STATUSES), Study.sla_checked.is_(False)))))
    for study in due:
        for row in study.targets:
            if row.sla:
                for breach in measure(session, study, row, now):
                    _store(session, now, study, row, breach)
        if StudyStatus(study.status).terminal:
            study.sla_checked = True
    session.commit()
    return len(due)


class SlaSweeper:
    """Runs :func:`sweep` every ``seconds`` in a daemon thread (nothing when ``seconds`` is
    None), so breaches are flagged on the timeline as they happen, not only when read."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, seconds: float | None
                 ) -> None:
        self.sessions, self.clock, self.seconds = sessions, clock, seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.seconds is None:
            return
        self._thread = threading.Thread(target=self._run, name="sla-sweep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.seconds is not None
        while not self._stop.wait(self.seconds):
            try:
                with self.sessions() as session:
                    sweep(session, self.clock)
            except Exception:  # keep sweeping: a locked database now is fine next time
                log.exception("SLA sweep failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
