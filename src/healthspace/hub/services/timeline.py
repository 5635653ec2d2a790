"""The study timeline: every step timestamped in one place; status changes also feed webhooks.

Status changes are queued on the session and handed to the webhook sender only after the
transaction commits (see :func:`committed_changes`), so a rolled-back change is never announced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from healthspace.core.clock import iso
from healthspace.core.enums import StudyStatus
from healthspace.hub.db.models import StudyEvent
from healthspace.hub.services import audit

_PENDING = "healthspace.status_changes"

# The timeline event a study status change is recorded as.
STATUS_EVENTS = {
    StudyStatus.AWAITING_APPROVAL: "awaiting_approval",
    StudyStatus.RUNNING: "started",
    StudyStatus.CANCELLED: "cancelled",
}


def record(
    session: Session,
    at: datetime,
    study_id: int,
    event: str,
    node: str | None = None,
    **detail: Any,
) -> None:
    """Add one event to a study's timeline (committed with the caller's unit of work).

    Every timeline step is also an audit-ledger entry (``study.<event>``), appended after the
    same commit.
    """
    session.add(StudyEvent(study_id=study_id, at=at, event=event, node=node, detail=detail))
    actor = str(detail.get("by") or node or "hub")
    subject = f"study:{study_id}" + (f"/node:{node}" if node else "")
    audit.queue(session, actor, f"study.{event}", subject, {"node": node, **detail})


def status_changed(
    session: Session, at: datetime, study_id: int, status: StudyStatus, **detail: Any
) -> None:
    """Record a study status change on the timeline and queue its webhook for after commit."""
    event = STATUS_EVENTS.get(status, "finished")
    if event == "finished":
        detail = {"status": str(status), **detail}
    record(session, at, study_id, event, **detail)
    session.info.setdefault(_PENDING, []).append(
        {"event": "study.status", "study_id": study_id, "status": str(status), "at": iso(at)}
    )


def committed_changes(session: Session) -> list[dict[str, Any]]:
    """The status changes queued on ``session``, cleared (call from an after-commit hook)."""
    changes: list[dict[str, Any]] = session.info.pop(_PENDING, [])
    return changes


def discard_changes(session: Session) -> None:
    session.info.pop(_PENDING, None)
