"""Approvals by data holders: list, approve a step, reject; pending approvals expire lazily.

Steps are taken in the engine's order (steward, then ethics); each step re-runs the policy
engine with every recorded approval, and a study moves on once no node is pending.
"""

from __future__ import annotations

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import Role, StudyStatus
from healthspace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthspace.governance.engine import Approval, ApprovalStep, Outcome, approval_steps
from healthspace.governance.policy import ApprovalMode
from healthspace.hub.db.models import Node, Study, StudyApproval, StudyNode
from healthspace.hub.db.session import rowcount
from healthspace.hub.principal import Principal
from healthspace.hub.schemas import ApprovalView, ApproveSpec, RejectSpec
from healthspace.hub.services import admission, timeline
from healthspace.hub.services.admission import ApprovalStatus
from healthspace.hub.services.ids import storable
from healthspace.hub.services.throttle import Throttle
from healthspace.hub.services.views import approval_view
from healthspace.hub.settings import HubSettings

_THROTTLE = Throttle()


def sweep(session: Session, clock: Clock) -> list[int]:
    """Expire every pending approval past its ``expires_at``; returns node ids given tasks.
    At most once per second of the hub's clock (:mod:`healthspace.hub.services.throttle`)."""
    if not _THROTTLE.due(session, clock):
        return []
    now = clock.now()
    due = session.execute(
        select(StudyNode.study_id, StudyNode.node_id, Node.name)
        .join(Node, Node.id == StudyNode.node_id)
        .join(Study, Study.id == StudyNode.study_id)
        .where(
            StudyNode.approval == ApprovalStatus.PENDING,
            StudyNode.expires_at <= now,
            Study.status == StudyStatus.AWAITING_APPROVAL,
        )
    ).all()
    studies: set[int] = set()
    for study_id, node_id, name in due:
        reason = {"code": "approval_expired", "field": "approval_ttl_days",
                  "message": "approval expired"}
        changed = rowcount(
            session,
            update(StudyNode)
            .where(StudyNode.study_id == study_id, StudyNode.node_id == node_id,
                   StudyNode.approval == ApprovalStatus.PENDING)
            .values(approval=ApprovalStatus.EXPIRED, decision=Outcome.DENY, reasons=[reason]),
        )
        if changed:
            timeline.record(session, now, study_id, "expiry", name)
            studies.add(study_id)
    session.commit()
    woken: list[int] = []
    for study_id in sorted(studies):
        woken += admission.settle(session, clock, study_id)
        session.commit()
    return woken


def _visible(principal: Principal) -> Select[StudyNode]:
    query = select(StudyNode).join(Node, Node.id == StudyNode.node_id)
    if principal.has_role(Role.DATA_HOLDER_ADMIN):
        query = query.where(Node.org_id == principal.org_id)
    return query


def list_approvals(
    session: Session, clock: Clock, principal: Principal, status: ApprovalStatus,
    *, limit: int, offset: int,
) -> list[ApprovalView]:
    """Approvals in ``status`` on nodes the caller may see (admins: own organisation's)."""
    sweep(session, clock)
    query = _visible(principal).where(StudyNode.approval == status)
    if status == ApprovalStatus.PENDING:  # a cancelled study's open approvals are moot
        query = query.join(Study, Study.id == StudyNode.study_id).where(
            Study.status == StudyStatus.AWAITING_APPROVAL
        )
    rows = session.scalars(
        query.order_by(StudyNode.study_id, Node.name).limit(limit).offset(offset)
    )
    return [approval_view(session.get_one(Study, row.study_id), row) for row in rows]


def _open_row(
    session: Session, clock: Clock, principal: Principal, study_id: int, node_name: str
) -> tuple[Study, StudyNode]:
    sweep(session, clock)
    study = session.get(Study, study_id) if storable(study_id) else None
    if study is None:
        raise NotFound(f"study {study_id} not found")
    node = session.scalar(select(Node).where(Node.name == node_name))
    row = session.get(StudyNode, (study_id, node.id)) if node is not None else None
    if node is None or row is None:
        raise NotFound(f"node {node_name!r} is not a target of study {study_id}", field="node")
    if not principal.is_operator and node.org_id != principal.org_id:
        raise Forbidden(f"node {node_name!r} belongs to another organisation", field="node")
    if study.status != StudyStatus.AWAITING_APPROVAL or row.approval != ApprovalStatus.PENDING:
        state = row.approval or "not_required"
        if row.approval == ApprovalStatus.PENDING:
            state = f"moot: the study is {study.status}"
        raise Conflict(f"the approval of {node_name!r} is {state}", field="status")
    return study, row


def _recorded(row: StudyNode) -> list[Approval]:
    return [
        Approval(step=ApprovalStep(a.step), approved=a.approved, by=a.by, at=a.at,
                 comment=a.comment, ethics_ref=a.ethics_ref)
        for a in row.approvals
    ]


def _next_step(row: StudyNode, step: ApprovalStep | None) -> ApprovalStep:
    mode = ApprovalMode(row.approval_mode or ApprovalMode.SINGLE)
    missing = [ApprovalStep(s) for s in row.missing_steps or []]
    if not missing:
        raise Conflict("no approval step is missing", field="step")
    step = step or missing[0]
    if step not in approval_steps(mode):
        raise InvalidInput(f"a {mode} approval has no {step} step", field="step")
    if step not in missing:
        raise Conflict(f"the {step} step is already approved", field="step")
    if step != missing[0]:
        raise Conflict(f"the {missing[0]} step comes before the {step} step", field="step")
    return step


def _decide_again(
    session: Session, clock: Clock, settings: HubSettings, study: Study, row: StudyNode
) -> list[int]:
    """Re-run the engine with every recorded approval, then let the study move on."""
    session.flush()
    session.expire(row, ["approvals"])
    decision, _ = admission.evaluate(
        session, admission.request_of(study), row.node, consumer_id=study.submitted_by,
        now=clock.now(), approvals=_recorded(row), before=study.id,
    )
    admission.apply(row, decision, settings)
    session.commit()
    woken = admission.settle(session, clock, study.id)
    session.commit()
    return woken


def _add(session: Session, clock: Clock, principal: Principal, study: Study, row: StudyNode,
         step: ApprovalStep, approved: bool, comment: str | None, ethics_ref: str | None) -> None:
    now = clock.now()
    session.add(StudyApproval(
        study_id=study.id, node_id=row.node_id, step=step, approved=approved,
        by_user_id=principal.id, by=principal.name, at=now, comment=comment,
        ethics_ref=ethics_ref,
    ))
    event = "approval" if approved else "rejection"
    detail = {"step": str(step), "by": principal.name}
    timeline.record(session, now, study.id, event, row.node.name,
                    **detail, **({"comment": comment} if comment else {}))


def approve(
    session: Session, clock: Clock, settings: HubSettings, principal: Principal,
    study_id: int, node_name: str, spec: ApproveSpec,
) -> tuple[ApprovalView, list[int]]:
    study, row = _open_row(session, clock, principal, study_id, node_name)
    step = _next_step(row, spec.step)
    ethics_ref = (spec.ethics_ref or "").strip() or None
    if step == ApprovalStep.ETHICS and ethics_ref is None:
        raise InvalidInput("an ethics approval must cite the committee's reference",
                           field="ethics_ref")
    _add(session, clock, principal, study, row, step, True, spec.comment, ethics_ref)
    woken = _decide_again(session, clock, settings, study, row)
    return approval_view(study, row), woken


def reject(
    session: Session, clock: Clock, settings: HubSettings, principal: Principal,
    study_id: int, node_name: str, spec: RejectSpec,
) -> tuple[ApprovalView, list[int]]:
    study, row = _open_row(session, clock, principal, study_id, node_name)
    comment = spec.comment.strip()
    if not comment:
        raise InvalidInput("say why the study is rejected", field="comment")
    step = _next_step(row, None)
    _add(session, clock, principal, study, row, step, False, comment, None)
    woken = _decide_again(session, clock, settings, study, row)
    return approval_view(study, row), woken
