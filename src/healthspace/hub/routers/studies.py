"""Studies: check (dry run), submit, list, read (with long-poll), cancel, feedback."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from healthspace.core.enums import Role, StudyStatus
from healthspace.core.models import Feedback, StudyList, StudySpec, StudyView
from healthspace.core.registry_models import StudyProgress
from healthspace.hub.auth import require, require_user
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.notifier import long_poll, node_topic, study_topic
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import Page, RowId, page, sweep_deadlines
from healthspace.hub.schemas import CheckResult, FeedbackSpec
from healthspace.hub.services import feedback, studies
from healthspace.hub.settings import MAX_WAIT_SECONDS

router = APIRouter(prefix="/studies", tags=["studies"])

VISIBILITY = "consumer: own; data_holder_admin: involving its nodes; operator, auditor: all"


@router.post("/check", response_model=CheckResult)
def check_study(
    spec: StudySpec,
    principal: Principal = Depends(require(Role.CONSUMER, Role.OPERATOR)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> CheckResult:
    """What submitting ``spec`` would decide at each node; stores nothing."""
    return studies.check(session, hub.clock, principal, spec)


@router.post("", response_model=StudyView, status_code=status.HTTP_201_CREATED)
def submit_study(
    spec: StudySpec,
    principal: Principal = Depends(require(Role.CONSUMER, Role.OPERATOR)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> StudyView:
    view, woken = studies.submit(session, hub.clock, hub.settings, principal, spec)
    hub.notifier.notify(*(node_topic(n) for n in woken))
    return view


@router.get("", response_model=StudyList)
def list_studies(
    status_: StudyStatus | None = Query(None, alias="status"),
    principal: Principal = Depends(require_user(note=VISIBILITY)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
    p: Page = Depends(page),
) -> StudyList:
    rows = studies.list_studies(
        session, hub.clock, principal, status=status_, limit=p.limit, offset=p.offset
    )
    return StudyList(studies=rows)


@router.get("/{study_id}", response_model=StudyView)
async def get_study(
    study_id: RowId,
    wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="long-poll until terminal"),
    principal: Principal = Depends(require_user(note=VISIBILITY)),
    hub: HubState = Depends(hub_state),
) -> StudyView:
    def check() -> StudyView:
        sweep_deadlines(hub)
        with hub.sessions() as session:
            return studies.get_study(session, hub.clock, principal, study_id)

    def state() -> StudyStatus | None:
        """While waiting only the status is read (every result of a many-node study wakes
        the waiter); the whole view is built once, when it returns."""
        sweep_deadlines(hub)
        with hub.sessions() as session:
            return studies.status_of(session, study_id)

    def visible() -> StudyStatus:
        sweep_deadlines(hub)
        with hub.sessions() as session:
            return studies.visible_status(session, hub.clock, principal, study_id)

    if wait > 0 and not (await run_in_threadpool(visible)).terminal:  # 404 / 403 first
        await long_poll(hub.notifier, study_topic(study_id), state,
                        lambda found: found is None or found.terminal,
                        wait=wait, recheck=hub.settings.recheck_seconds)
    view = await run_in_threadpool(check)
    if view.result is not None:  # every read of a released result is on the record
        await run_in_threadpool(hub.audit.record, principal.name, "study.result_access",
                                f"study:{study_id}", {"status": str(view.status)})
    return view


@router.get("/{study_id}/progress", response_model=StudyProgress)
def get_progress(
    study_id: RowId,
    principal: Principal = Depends(require_user(note=VISIBILITY)),
    hub: HubState = Depends(hub_state),
) -> StudyProgress:
    """What the study reported round by round (a training round's loss, AUC, nodes
    reporting and nodes dropped), for live progress."""
    sweep_deadlines(hub)
    with hub.sessions() as session:
        return studies.get_progress(session, hub.clock, principal, study_id)


@router.post("/{study_id}/cancel", response_model=StudyView)
def cancel_study(
    study_id: RowId,
    principal: Principal = Depends(
        require(Role.CONSUMER, Role.OPERATOR, note="consumer: only its own studies")
    ),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> StudyView:
    view = studies.cancel(session, hub.clock, principal, study_id)
    hub.notifier.notify(study_topic(study_id))
    return view


@router.post(
    "/{study_id}/feedback", response_model=Feedback, status_code=status.HTTP_201_CREATED
)
def give_feedback(
    study_id: RowId,
    spec: FeedbackSpec,
    principal: Principal = Depends(
        require(Role.CONSUMER, Role.OPERATOR, note="the submitter only, once, after it ends")
    ),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> Feedback:
    return feedback.give(session, hub.clock, principal, study_id, spec)
