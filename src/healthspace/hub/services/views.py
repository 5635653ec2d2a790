"""Conversions from hub store rows to the core wire models returned by the API."""

from __future__ import annotations

from typing import Any

from healthspace.core.clock import iso
from healthspace.core.enums import OrgKind, Role, StudyStatus, TaskStatus
from healthspace.core.models import (
    Catalog,
    Feedback,
    NodeView,
    OrgView,
    RegistryRef,
    StudyCost,
    StudyView,
    TaskView,
    TimelineEvent,
    UserView,
)
from healthspace.governance.engine import Approval, ApprovalStep
from healthspace.governance.pricing import money
from healthspace.hub.db.models import (
    Node,
    Organisation,
    Study,
    StudyApproval,
    StudyFeedback,
    StudyNode,
    Task,
    User,
)
from healthspace.hub.principal import Principal
from healthspace.hub.schemas import ApprovalView


def org_view(org: Organisation) -> OrgView:
    return OrgView(
        id=org.id,
        name=org.name,
        kind=OrgKind(org.kind),
        display_name=org.display_name,
        created_at=org.created_at,
    )


def user_view(user: User) -> UserView:
    return UserView(
        id=user.id,
        name=user.name,
        org=user.org.name,
        role=Role(user.role),
        created_at=user.created_at,
    )


def node_view(node: Node) -> NodeView:
    return NodeView(
        id=node.id,
        name=node.name,
        org=node.org.name,
        org_kind=OrgKind(node.org.kind),
        enrolled_at=node.enrolled_at,
        last_seen_at=node.last_seen_at,
        public_key=node.public_key,
        catalog=Catalog.model_validate(node.catalog) if node.catalog is not None else None,
        prices=(node.policy or {}).get("prices"),
        sla=(node.policy or {}).get("sla"),
    )


def task_view(task: Task) -> TaskView:
    return TaskView(
        node=task.node.name,
        round=task.round,
        status=TaskStatus(task.status),
        error=task.error,
        queued_at=task.queued_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        attempts=task.attempts,
    )


def delivered_to(study: Study, viewer: Principal | None) -> dict[str, Any] | None:
    """The study's deliveries addressed to ``viewer``: entries of nodes its organisation
    runs, or every entry for a payer organisation; nothing for anyone else."""
    if viewer is None or not study.deliveries:
        return None
    if viewer.org_kind == OrgKind.PAYER:
        return dict(study.deliveries)
    own = {row.node.name for row in study.targets if row.node.org_id == viewer.org_id}
    mine = {name: entry for name, entry in study.deliveries.items() if name in own}
    return mine or None


def study_view(study: Study, viewer: Principal | None = None) -> StudyView:
    return StudyView(
        id=study.id,
        title=study.title,
        analysis=study.analysis,
        params=study.params,
        cohort=study.cohort,
        dataset=study.dataset,
        registry=(RegistryRef.model_validate(study.registry_ref)
                  if study.registry_ref is not None else None),
        purpose=study.purpose,
        nodes=list(study.nodes),
        preview=study.preview,
        secure_aggregation=bool(study.secure),
        status=StudyStatus(study.status),
        round=study.round,
        submitted_by=study.submitter.name,
        created_at=study.created_at,
        updated_at=study.updated_at,
        result=study.result,
        delivered=delivered_to(study, viewer),
        error=study.error,
        tasks=[task_view(task) for task in study.tasks],
        timeline=[
            TimelineEvent(at=e.at, event=e.event, node=e.node, detail=e.detail or {})
            for e in study.events
        ],
        feedback=feedback_view(study.feedback) if study.feedback is not None else None,
        decisions={
            row.node.name: decision_view(row) for row in study.targets if row.decision is not None
        },
        cost=cost_view(study),
        round_timeout_seconds=study.round_timeout_seconds,
    )


def cost_view(study: Study) -> StudyCost | None:
    settled = study.settlement
    if study.estimate_cents is None and settled is None:
        return None
    return StudyCost(
        estimate=money(study.estimate_cents) if study.estimate_cents is not None else None,
        invoiced=money(settled.invoiced_cents) if settled is not None else None,
        currency=settled.currency if settled is not None else None,
        settled_at=settled.settled_at if settled is not None else None,
    )


def feedback_view(feedback: StudyFeedback) -> Feedback:
    return Feedback(
        rating=feedback.rating, comment=feedback.comment, by=feedback.by, at=feedback.at
    )


def approval_record(approval: StudyApproval) -> dict[str, Any]:
    """A recorded step in the engine's ``Approval`` shape (as task assignments carry it)."""
    return Approval(
        step=ApprovalStep(approval.step),
        approved=approval.approved,
        by=approval.by,
        at=approval.at,
        comment=approval.comment,
        ethics_ref=approval.ethics_ref,
    ).model_dump(mode="json")


def decision_view(row: StudyNode) -> dict[str, Any]:
    """The hub's decision for one node of a study and where its approval stands."""
    return {
        "outcome": row.decision,
        "reasons": row.reasons or [],
        "approval_mode": row.approval_mode,
        "policy_version": row.policy_version,
        "min_cell_size": row.min_cell_size,
        "approval": row.approval,
        "missing_steps": row.missing_steps or [],
        "expires_at": iso(row.expires_at) if row.expires_at is not None else None,
        "approvals": [approval_record(a) for a in row.approvals],
    }


def approval_view(study: Study, row: StudyNode) -> ApprovalView:
    return ApprovalView(
        study_id=study.id,
        node=row.node.name,
        title=study.title,
        analysis=study.analysis,
        purpose=study.purpose,
        consumer=study.submitter.name,
        consumer_org=study.submitter.org.name,
        cohort=study.cohort,
        approval_mode=row.approval_mode or "auto",
        steps_done=[a.step for a in row.approvals if a.approved],
        missing_steps=row.missing_steps or [],
        status=row.approval or "not_required",
        decision=row.decision or "allow",
        reasons=row.reasons or [],
        approvals=[approval_record(a) for a in row.approvals],
        submitted_at=study.created_at,
        expires_at=row.expires_at,
    )
