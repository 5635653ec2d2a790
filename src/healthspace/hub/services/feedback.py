"""Consumer feedback on a finished study: the submitter rates it once."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus
from healthspace.core.errors import Conflict, Forbidden, NotFound
from healthspace.core.models import Feedback
from healthspace.hub.db.models import Study, StudyFeedback
from healthspace.hub.principal import Principal
from healthspace.hub.schemas import FeedbackSpec
from healthspace.hub.services import timeline
from healthspace.hub.services.ids import storable
from healthspace.hub.services.views import feedback_view


def give(
    session: Session, clock: Clock, principal: Principal, study_id: int, spec: FeedbackSpec
) -> Feedback:
    study = session.get(Study, study_id) if storable(study_id) else None
    if study is None:
        raise NotFound(f"study {study_id} not found")
    if study.submitted_by != principal.id:
        raise Forbidden("only the study's submitter may give feedback")
    if not StudyStatus(study.status).terminal:
        raise Conflict(f"study {study_id} is {study.status}; feedback comes after it ends",
                       field="status")
    if session.get(StudyFeedback, study_id) is not None:
        raise Conflict(f"study {study_id} already has feedback", field="feedback")
    now = clock.now()
    row = StudyFeedback(
        study_id=study_id, rating=spec.rating, comment=spec.comment,
        by_user_id=principal.id, by=principal.name, at=now,
    )
    session.add(row)
    timeline.record(session, now, study_id, "feedback", rating=spec.rating)
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent second submission
        session.rollback()
        raise Conflict(f"study {study_id} already has feedback", field="feedback") from exc
    return feedback_view(row)
