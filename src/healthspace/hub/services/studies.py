"""Study submission, admission, visibility, listing and cancellation."""

from __future__ import annotations

from sqlalchemy import Select, false, select, update
from sqlalchemy.orm import Session

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis
from healthspace.cohort.models import load_cohort
from healthspace.core.clock import Clock
from healthspace.core.enums import TERMINAL_STUDY_STATUSES, OrgKind, Role, StudyStatus
from healthspace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthspace.core.models import StudySpec, StudyView
from healthspace.hub.db.models import Node, Study, StudyNode
from healthspace.hub.db.session import rowcount
from healthspace.hub.principal import Principal
from healthspace.hub.services.nodes import holds_persons
from healthspace.hub.services.rounds import queue_round
from healthspace.hub.services.views import study_view
from healthspace.hub.settings import HubSettings


def _validate(spec: StudySpec) -> tuple[Analysis, dict[str, object]]:
    analysis = registry.get(spec.analysis)
    params = analysis.parse_params(spec.params).model_dump(mode="json")
    if analysis.requires_cohort and spec.cohort is None:
        raise InvalidInput(f"analysis {analysis.name!r} needs a cohort", field="cohort")
    if not analysis.requires_cohort and spec.cohort is not None:
        raise InvalidInput(f"analysis {analysis.name!r} takes no cohort", field="cohort")
    if spec.cohort is not None:
        load_cohort(spec.cohort)  # a dict only: never a path the hub would read
    return analysis, params


def _resolve_nodes(session: Session, names: list[str] | None) -> list[Node]:
    if names is None:
        nodes = [
            node
            for node in session.scalars(select(Node).order_by(Node.name))
            if node.org.kind == OrgKind.HOSPITAL and holds_persons(node)
        ]
        if not nodes:
            raise InvalidInput(
                "no hospital node has published a catalogue with persons; "
                "name the nodes explicitly",
                field="nodes",
            )
        return nodes
    found = {n.name: n for n in session.scalars(select(Node).where(Node.name.in_(names)))}
    for i, name in enumerate(names):
        if name not in found:
            raise InvalidInput(f"unknown node {name!r}", field=f"nodes[{i}]")
    return [found[name] for name in names]


def admit(study: Study) -> StudyStatus:
    """The governance decision for a newly submitted study.

    Every study is admitted straight to running for now; policy evaluation and approvals
    will decide here (running, awaiting_approval or rejected).
    """
    return StudyStatus.RUNNING


def submit(
    session: Session, clock: Clock, settings: HubSettings, principal: Principal, spec: StudySpec
) -> tuple[StudyView, list[int]]:
    """Validate, store and admit a study; returns its view and the node ids given work."""
    analysis, params = _validate(spec)
    nodes = _resolve_nodes(session, spec.nodes)
    now = clock.now()
    study = Study(
        title=spec.title,
        analysis=analysis.name,
        params=params,
        cohort=spec.cohort,
        purpose=spec.purpose,
        nodes=[n.name for n in nodes],
        status=StudyStatus.SUBMITTED,
        round=1,
        state={},
        submitted_by=principal.id,
        created_at=now,
        updated_at=now,
    )
    session.add(study)
    session.flush()
    session.add_all(StudyNode(study_id=study.id, node_id=n.id) for n in nodes)
    study.status = admit(study)
    if study.status == StudyStatus.RUNNING:
        queue_round(session, clock, study, nodes, round=1, min_cell_size=settings.min_cell_size)
    elif StudyStatus(study.status).terminal:
        study.finished_at = now
    session.commit()
    woken = [n.id for n in nodes] if study.status == StudyStatus.RUNNING else []
    return study_view(study), woken


def _visible(principal: Principal) -> Select[Study]:
    query = select(Study)
    if principal.has_role(Role.OPERATOR, Role.AUDITOR):
        return query
    if principal.role == Role.CONSUMER:
        return query.where(Study.submitted_by == principal.id)
    if principal.role == Role.DATA_HOLDER_ADMIN:
        involved = (
            select(StudyNode.study_id)
            .join(Node, Node.id == StudyNode.node_id)
            .where(Node.org_id == principal.org_id)
        )
        return query.where(Study.id.in_(involved))
    return query.where(false())


def list_studies(
    session: Session, principal: Principal, *, status: StudyStatus | None, limit: int, offset: int
) -> list[StudyView]:
    query = _visible(principal)
    if status is not None:
        query = query.where(Study.status == status)
    rows = session.scalars(query.order_by(Study.id.desc()).limit(limit).offset(offset))
    return [study_view(study) for study in rows]


def get_study(session: Session, principal: Principal, study_id: int) -> StudyView:
    if session.get(Study, study_id) is None:
        raise NotFound(f"study {study_id} not found")
    study = session.scalar(_visible(principal).where(Study.id == study_id))
    if study is None:
        raise Forbidden(f"you may not see study {study_id}")
    return study_view(study)


def cancel(session: Session, clock: Clock, principal: Principal, study_id: int) -> StudyView:
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    if not principal.is_operator and study.submitted_by != principal.id:
        raise Forbidden("only the submitter or an operator may cancel a study")
    now = clock.now()
    # Compare-and-set: a result arriving at the same moment may have just finished the study.
    changed = rowcount(
        session,
        update(Study)
        .where(Study.id == study_id, Study.status.not_in(TERMINAL_STUDY_STATUSES))
        .values(status=StudyStatus.CANCELLED, updated_at=now, finished_at=now),
    )
    session.commit()
    session.refresh(study)
    if not changed:
        raise Conflict(f"study {study_id} is already {study.status}", field="status")
    return study_view(study)
