"""Study submission (with per-node policy pre-checks), dry-run checks, visibility, cancel."""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import ColumnElement, Select, false, select, true, update
from sqlalchemy.orm import Session, selectinload

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis
from healthspace.analyses.execute import check_inputs
from healthspace.cohort.dataset import load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.core.clock import Clock
from healthspace.core.enums import TERMINAL_STUDY_STATUSES, OrgKind, Role, StudyStatus
from healthspace.core.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from healthspace.core.models import StudySpec, StudyView
from healthspace.core.registry_models import StudyProgress
from healthspace.governance.engine import PREVIEW_ANALYSIS, StudyRequest
from healthspace.governance.policy import Purpose, secure_required
from healthspace.hub.db.models import Node, Study, StudyNode, nodes_with_documents
from healthspace.hub.db.session import rowcount
from healthspace.hub.principal import Principal
from healthspace.hub.schemas import CheckResult
from healthspace.hub.services import (
    admission,
    approvals,
    audit,
    billing,
    models,
    progress,
    registries,
    timeline,
)
from healthspace.hub.services.ids import storable
from healthspace.hub.services.nodes import holds_persons
from healthspace.hub.services.policies import node_policy
from healthspace.hub.services.views import study_view
from healthspace.hub.settings import HubSettings

PURPOSES = [str(p) for p in Purpose]
# What a StudyView reads, loaded in one query per relationship for a whole page of studies.
VIEW_LOADS = (selectinload(Study.tasks), selectinload(Study.events),
              selectinload(Study.targets), selectinload(Study.feedback),
              selectinload(Study.settlement))


def _validate(spec: StudySpec) -> tuple[Analysis, dict[str, object]]:
    analysis = registry.get(spec.analysis)
    if spec.preview and (analysis.name != PREVIEW_ANALYSIS or spec.cohort is None):
        raise InvalidInput(f"a preview is a {PREVIEW_ANALYSIS} with a cohort; submit "
                           f"{analysis.name!r} as a regular study (preview: false)",
                           field="preview")
    params = analysis.parse_params(spec.params).model_dump(mode="json")
    if spec.preview:  # a preview releases the count only; each node forces its release mode
        params.update(distinct=False, breakdown=False)
    if spec.secure_aggregation and (spec.preview or not analysis.secure):
        what = "a preview (its counts are noised)" if spec.preview else repr(analysis.name)
        raise InvalidInput(f"secure aggregation does not apply to {what}",
                           field="secure_aggregation")
    # Dicts only: never a path the hub would read.
    if spec.cohort is not None:
        load_cohort(spec.cohort)
    if spec.dataset is not None:
        load_dataset(spec.dataset)
    check_inputs(analysis, spec.cohort is not None, spec.dataset is not None)
    if spec.purpose not in PURPOSES:
        raise InvalidInput(
            f"unknown purpose {spec.purpose!r}; one of {', '.join(PURPOSES)}", field="purpose"
        )
    return analysis, params


def _scoring(session: Session, principal: Principal, spec: StudySpec) -> StudySpec:
    """A score study's model must be deployable by this principal; it builds the model's own
    analysis dataset unless the study gives one."""
    if spec.analysis != models.SCORING or not isinstance(spec.params.get("model_id"), int):
        return spec
    dataset = models.check_scoring(session, principal, spec.params, spec.dataset)
    return spec.model_copy(update={"dataset": dataset})


def _resolve_nodes(session: Session, names: list[str] | None) -> list[Node]:
    if names is None:
        nodes = [
            node
            for node in session.scalars(nodes_with_documents().order_by(Node.name))
            if node.org.kind == OrgKind.HOSPITAL and holds_persons(node)
        ]
        if not nodes:
            raise InvalidInput(
                "no hospital node has published a catalogue with persons; "
                "name the nodes explicitly",
                field="nodes",
            )
        return nodes
    found = {n.name: n for n in session.scalars(nodes_with_documents().where(Node.name.in_(names)))}
    for i, name in enumerate(names):
        if name not in found:
            raise InvalidInput(f"unknown node {name!r}", field=f"nodes[{i}]")
    return [found[name] for name in names]


def check(
    session: Session, clock: Clock, principal: Principal, spec: StudySpec
) -> CheckResult:
    """What a submit would decide per node, without storing anything (a dry run)."""
    spec, _ = registries.resolve(session, spec)
    spec = _scoring(session, principal, spec)
    analysis, params = _validate(spec)
    targets = _resolve_nodes(session, spec.nodes)
    analysis.check_nodes(analysis.parse_params(params), [n.name for n in targets])
    now = clock.now()
    request = StudyRequest(
        analysis=analysis.name, purpose=spec.purpose, consumer=principal.name,
        consumer_org=principal.org, submitted_at=now, preview=spec.preview,
    )
    decisions = {
        node.name: admission.evaluate(
            session, request, node, consumer_id=principal.id, now=now
        )[0]
        for node in targets
    }
    audit.queue(session, principal.name, "study.check", f"consumer:{principal.name}",
                {"analysis": analysis.name, "purpose": spec.purpose,
                 "outcomes": {name: str(d.outcome) for name, d in decisions.items()}})
    session.commit()
    return CheckResult(nodes=decisions)


def submit(
    session: Session, clock: Clock, settings: HubSettings, principal: Principal, spec: StudySpec
) -> tuple[StudyView, list[int]]:
    """Validate, store and pre-check a study; returns its view and the node ids given work.

    Each target node's published policy decides (allow / needs_approval / deny); the study
    then waits for approvals, starts, or is rejected (see ``admission.settle``). A study
    naming a ``registry`` is resolved to its definition first (``registries.resolve``).
    """
    spec, registry_ref = registries.resolve(session, spec)
    spec = _scoring(session, principal, spec)
    analysis, params = _validate(spec)
    nodes = _resolve_nodes(session, spec.nodes)
    analysis.check_nodes(analysis.parse_params(params), [n.name for n in nodes])
    approvals.sweep(session, clock)
    now = clock.now()
    study = Study(
        title=spec.title,
        analysis=analysis.name,
        params=params,
        cohort=spec.cohort,
        dataset=spec.dataset,
        registry_ref=registry_ref.model_dump() if registry_ref is not None else None,
        purpose=spec.purpose,
        nodes=[n.name for n in nodes],
        round_timeout_seconds=spec.round_timeout_seconds,
        preview=spec.preview,
        secure=not spec.preview and analysis.secure and (
            spec.secure_aggregation or any(secure_required(node_policy(n)) for n in nodes)),
        status=StudyStatus.SUBMITTED,
        round=1,
        state={},
        submitted_by=principal.id,
        created_at=now,
        updated_at=now,
    )
    session.add(study)
    session.flush()
    if params.get("distinct") and not params.get("distinct_salt"):
        # One hashing salt per study, so sketches of different studies cannot be lined up.
        study.params = {**params, "distinct_salt": f"study:{study.id}"}
    if registry_ref is None:
        timeline.record(session, now, study.id, "submitted", by=principal.name)
    else:
        timeline.record(session, now, study.id, "submitted", by=principal.name,
                        registry=registry_ref.name, registry_version=registry_ref.version)
    admission.precheck(session, clock, settings, study, nodes)
    session.flush()
    rows = list(session.scalars(select(StudyNode).where(StudyNode.study_id == study.id)))
    try:
        billing.reserve(session, settings, study, rows, {n.id: node_policy(n) for n in nodes})
    except QuotaExceeded as exc:
        session.rollback()  # nothing of the study is kept; the refusal is on the record
        audit.queue(session, principal.name, "billing.quota_refused",
                    f"consumer:{principal.name}", {"analysis": analysis.name,
                                                   "message": exc.message})
        session.commit()
        raise
    woken = admission.settle(session, clock, study.id)
    session.commit()
    session.expire(study)
    return study_view(study, principal), woken


def _visible(principal: Principal) -> Select[Study]:
    return select(Study).options(*VIEW_LOADS).where(_may_see(principal))


def _may_see(principal: Principal) -> ColumnElement[bool]:
    """Which studies ``principal`` may see, as a condition on ``Study``."""
    if principal.has_role(Role.OPERATOR, Role.AUDITOR):
        return true()
    if principal.role == Role.CONSUMER:
        return Study.submitted_by == principal.id
    if principal.role == Role.DATA_HOLDER_ADMIN:
        involved = (
            select(StudyNode.study_id)
            .join(Node, Node.id == StudyNode.node_id)
            .where(Node.org_id == principal.org_id)
        )
        return Study.id.in_(involved)
    return false()


def list_studies(
    session: Session,
    clock: Clock,
    principal: Principal,
    *,
    status: StudyStatus | None,
    limit: int,
    offset: int,
) -> list[StudyView]:
    approvals.sweep(session, clock)
    query = _visible(principal)
    if status is not None:
        query = query.where(Study.status == status)
    rows = session.scalars(query.order_by(Study.id.desc()).limit(limit).offset(offset))
    return [study_view(study, principal) for study in rows]


def visible_study(session: Session, clock: Clock, principal: Principal, study_id: int) -> Study:
    approvals.sweep(session, clock)
    study = (session.scalar(_visible(principal).where(Study.id == study_id))
             if storable(study_id) else None)
    if study is None:
        _refuse(session, study_id)
    return study


def visible_status(session: Session, clock: Clock, principal: Principal, study_id: int
                   ) -> StudyStatus:
    """The study's status if ``principal`` may see it (404 / 403 otherwise), without loading
    its view: a long-poll checks this before waiting and builds the view once, at the end."""
    approvals.sweep(session, clock)
    status = (session.scalar(select(Study.status).where(Study.id == study_id,
                                                        _may_see(principal)))
              if storable(study_id) else None)
    if status is None:
        _refuse(session, study_id)
    return StudyStatus(status)


def _refuse(session: Session, study_id: int) -> NoReturn:
    """Why a study was not found for its reader: it does not exist (404) or is not theirs."""
    if not storable(study_id) or session.scalar(
            select(Study.id).where(Study.id == study_id)) is None:
        raise NotFound(f"study {study_id} not found")
    raise Forbidden(f"you may not see study {study_id}")


def get_study(session: Session, clock: Clock, principal: Principal, study_id: int) -> StudyView:
    return study_view(visible_study(session, clock, principal, study_id), principal)


def status_of(session: Session, study_id: int) -> StudyStatus | None:
    """The study's status alone (one indexed read), for long-polls that already checked the
    reader may see it."""
    value = session.scalar(select(Study.status).where(Study.id == study_id))
    return StudyStatus(value) if value is not None else None


def get_progress(session: Session, clock: Clock, principal: Principal,
                 study_id: int) -> StudyProgress:
    return progress.view(session, visible_study(session, clock, principal, study_id))


def cancel(session: Session, clock: Clock, principal: Principal, study_id: int) -> StudyView:
    study = session.get(Study, study_id) if storable(study_id) else None
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
    if changed:
        timeline.status_changed(session, now, study_id, StudyStatus.CANCELLED, by=principal.name)
    session.commit()
    session.expire(study)
    if not changed:
        raise Conflict(f"study {study_id} is already {study.status}", field="status")
    return study_view(study, principal)
