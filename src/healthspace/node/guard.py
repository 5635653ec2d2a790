"""The node's own checks before any computation: the hub is never trusted alone.

A task runs only if the hub's signature over it verifies with a pinned hub key and the node's
own policy (not the hub's copy) allows it for this consumer, purpose and analysis, with the
approvals the hub reports.
"""

from __future__ import annotations

from datetime import UTC, datetime

from healthspace.core.clock import Clock, SystemClock
from healthspace.core.envelope import verify_assignment
from healthspace.core.models import TaskAssignment
from healthspace.governance.engine import (
    Approval,
    Decision,
    DecisionContext,
    StudyRequest,
    decide,
)
from healthspace.governance.policy import UsagePolicy
from healthspace.node.state import NodeState


def studies_today(state: NodeState, consumer: str, now: datetime, exclude_study: int) -> int:
    """Distinct studies of ``consumer`` this node ran since UTC midnight (from its run log);
    previews have their own hourly limit and do not count."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with state.connect() as db:
        row = db.execute(
            "SELECT count(DISTINCT study_id) FROM runs WHERE consumer = ? AND study_id != ? "
            "AND status = 'completed' AND preview = 0 AND finished_at >= ?",
            (consumer, exclude_study, midnight.isoformat().replace("+00:00", "Z")),
        ).fetchone()
    return int(row[0])


def recheck(
    task: TaskAssignment,
    policy: UsagePolicy,
    state: NodeState,
    *,
    clock: Clock | None = None,
    require_hub_signature: bool = True,
) -> Decision:
    """The node's decision for ``task``; raises EnvelopeError when the hub signature fails."""
    if require_hub_signature:
        verify_assignment(task.model_dump(mode="json"), state.pinned_hub_keys())
    now = (clock or SystemClock()).now()
    request = StudyRequest(
        analysis=task.analysis,
        purpose=task.purpose,
        consumer=task.consumer,
        consumer_org=task.consumer_org,
        submitted_at=task.submitted_at or now,
        preview=task.preview,  # hub-signed, so the node may trust the flag
    )
    context = DecisionContext(
        now=now,
        # Later rounds of a study the node already admitted do not count against the limit.
        studies_today=0 if task.round > 1 else studies_today(state, task.consumer, now,
                                                             task.study_id),
        approvals=[Approval.model_validate(a) for a in task.approvals],
        # previews_last_hour stays 0: the hub enforces previews.per_hour; the node still
        # forces the release mode (runner), so a hub that over-admits gains only noisy counts.
    )
    return decide(request, policy, context)
