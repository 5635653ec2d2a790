"""Governance at the hub: per-node policy pre-checks, and starting or rejecting a study.

The node's published policy decides (``governance.engine.decide``); the node re-checks the
same policy before it computes anything. A study waits while any node's approval is pending;
then it starts with queued tasks for the nodes that allow it (refused tasks, with the reasons,
for the rest) or, if none does, it is rejected.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.governance.engine import (
    ADMITTED,
    DENY_CODES,
    Approval,
    Decision,
    DecisionContext,
    Outcome,
    StudyRequest,
    decide,
)
from healthspace.governance.policy import UsagePolicy
from healthspace.hub.db.models import Node, Study, StudyNode, Task, User
from healthspace.hub.db.session import rowcount
from healthspace.hub.services import billing, models, rounds, timeline
from healthspace.hub.services.policies import node_policy
from healthspace.hub.settings import HubSettings


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    NOT_REQUIRED = "not_required"


PREVIEW_WINDOW = timedelta(hours=1)  # previews.per_hour counts over this rolling window


def midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def studies_today(
    session: Session, node_id: int, consumer_id: int, at: datetime, before: int | None = None
) -> int:
    """The consumer's studies admitted (allowed or pending) to this node on ``at``'s UTC day.

    ``before`` counts only studies submitted before that one (re-decisions of a study see the
    same count it was admitted with).
    """
    day = midnight(at)
    query = (
        select(func.count())
        .select_from(StudyNode)
        .join(Study, Study.id == StudyNode.study_id)
        .where(
            StudyNode.node_id == node_id,
            Study.submitted_by == consumer_id,
            Study.created_at >= day,
            Study.created_at < day + timedelta(days=1),
            Study.preview.is_(False),  # previews have their own hourly limit
            StudyNode.decision.in_(ADMITTED),
        )
    )
    if before is not None:
        query = query.where(Study.id < before)
    return int(session.scalar(query) or 0)


def previews_last_hour(
    session: Session, node_id: int, org_id: int, at: datetime, before: int | None = None
) -> int:
    """The organisation's previews admitted to this node in the hour up to ``at`` (rolling)."""
    query = (
        select(func.count())
        .select_from(StudyNode)
        .join(Study, Study.id == StudyNode.study_id)
        .join(User, User.id == Study.submitted_by)
        .where(
            StudyNode.node_id == node_id,
            User.org_id == org_id,
            Study.preview.is_(True),
            Study.created_at > at - PREVIEW_WINDOW,
            Study.created_at <= at,
            StudyNode.decision == Outcome.ALLOW,
        )
    )
    if before is not None:
        query = query.where(Study.id < before)
    return int(session.scalar(query) or 0)


def evaluate(
    session: Session,
    request: StudyRequest,
    node: Node,
    *,
    consumer_id: int,
    now: datetime,
    approvals: list[Approval] | None = None,
    before: int | None = None,
) -> tuple[Decision, UsagePolicy]:
    """The engine's decision for one node under its published policy."""
    policy = node_policy(node)
    context = DecisionContext(now=now, approvals=approvals or [])
    # The counts are read only where the policy limits them (one query per node otherwise).
    if request.preview and policy.preview_rules.mode != "off":
        consumer = session.get(User, consumer_id)
        org_id = consumer.org_id if consumer is not None else -1
        count = previews_last_hour(session, node.id, org_id, request.submitted_at, before)
        context = context.model_copy(update={"previews_last_hour": count})
    elif not request.preview and policy.rate_limit_per_day is not None:
        count = studies_today(session, node.id, consumer_id, request.submitted_at, before)
        context = context.model_copy(update={"studies_today": count})
    return decide(request, policy, context), policy


def request_of(study: Study) -> StudyRequest:
    return StudyRequest(
        analysis=study.analysis,
        purpose=study.purpose,
        consumer=study.submitter.name,
        consumer_org=study.submitter.org.name,
        submitted_at=study.created_at,
        preview=study.preview,
    )


def apply(row: StudyNode, decision: Decision, settings: HubSettings) -> None:
    """Store a decision on the study's node row (the approval status follows the outcome)."""
    row.decision = decision.outcome
    row.reasons = [r.model_dump(mode="json") for r in decision.reasons]
    row.approval_mode = decision.approval_mode
    row.missing_steps = [str(s) for s in decision.missing_steps]
    row.policy_version = decision.policy_version
    row.min_cell_size = max(decision.min_cell_size, settings.min_cell_size)
    if decision.outcome == Outcome.NEEDS_APPROVAL:
        row.approval = ApprovalStatus.PENDING
    elif row.approval in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED):
        allowed = decision.outcome == Outcome.ALLOW
        row.approval = ApprovalStatus.APPROVED if allowed else ApprovalStatus.REJECTED
    else:
        row.approval = ApprovalStatus.NOT_REQUIRED


def precheck(
    session: Session, clock: Clock, settings: HubSettings, study: Study, nodes: list[Node]
) -> None:
    """Decide for every target node of a new study and record why (rows + timeline)."""
    now = clock.now()
    request = request_of(study)
    for node in nodes:
        decision, policy = evaluate(
            session, request, node, consumer_id=study.submitted_by, now=now, before=study.id
        )
        row = StudyNode(study_id=study.id, node_id=node.id)
        apply(row, decision, settings)
        billing.snapshot(row, policy)
        if row.approval == ApprovalStatus.PENDING:
            row.expires_at = now + timedelta(days=policy.approval_ttl_days)
        session.add(row)
        timeline.record(
            session, now, study.id, "policy_checked", node.name,
            outcome=str(decision.outcome), policy_version=decision.policy_version,
            reasons=decision.codes,
        )


def refusal(row: StudyNode) -> str:
    """Why a node will not take part, for its refused task and the study's error."""
    reasons: list[dict[str, Any]] = row.reasons or []
    denying = [r for r in reasons if r.get("code") in DENY_CODES] or reasons
    return "; ".join(str(r.get("message")) for r in denying) or "refused by policy"


def settle(session: Session, clock: Clock, study_id: int) -> list[int]:
    """Move a study on once no node is pending; returns the ids of nodes given tasks.

    Compare-and-set on the study status, so concurrent approvals start a study only once.
    The caller commits.
    """
    study = session.get(Study, study_id)
    if study is None or study.status not in (StudyStatus.SUBMITTED, StudyStatus.AWAITING_APPROVAL):
        return []
    rows = list(session.scalars(select(StudyNode).where(StudyNode.study_id == study_id)))
    now = clock.now()
    if any(r.approval == ApprovalStatus.PENDING for r in rows):
        if study.status == StudyStatus.SUBMITTED:
            study.status, study.updated_at = StudyStatus.AWAITING_APPROVAL, now
            timeline.status_changed(session, now, study_id, StudyStatus.AWAITING_APPROVAL)
        return []
    allowed = [r for r in rows if r.decision == Outcome.ALLOW]
    values: dict[str, Any] = {"status": StudyStatus.RUNNING, "updated_at": now}
    if not allowed:
        error = "; ".join(f"{r.node.name}: {refusal(r)}" for r in rows)
        values.update(status=StudyStatus.REJECTED, finished_at=now, error=error)
    expected = study.status
    changed = rowcount(
        session,
        update(Study).where(Study.id == study_id, Study.status == expected).values(**values),
    )
    session.expire(study)
    if not changed:
        return []
    tasks = []
    first_input = models.first_round_input(session, study)
    for r in rows:
        ok = r.decision == Outcome.ALLOW
        tasks.append(Task(
            study_id=study_id, node_id=r.node_id, round=1, round_input=first_input,
            status=TaskStatus.QUEUED if ok else TaskStatus.REFUSED,
            error=None if ok else refusal(r),
            min_cell_size=r.min_cell_size, queued_at=now,
            finished_at=None if ok else now, attempts=0,
        ))
    session.add_all(tasks)
    timeline.status_changed(session, now, study_id, values["status"])
    if values["status"] != StudyStatus.RUNNING:
        return []
    failed = rounds.attach_secure(session, clock, study, tasks)
    if failed is not None:
        study.status, study.error = StudyStatus.FAILED, failed
        study.finished_at = study.updated_at = now
        timeline.status_changed(session, now, study_id, StudyStatus.FAILED)
        return []
    return [t.node_id for t in tasks if t.status == TaskStatus.QUEUED]
