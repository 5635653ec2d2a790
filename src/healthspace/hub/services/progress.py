"""Study progress: entries an analysis reports per round (e.g. loss and AUC of training)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.enums import TaskStatus
from healthspace.core.registry_models import ProgressEntry, StudyProgress
from healthspace.hub.db.models import Study, StudyProgressRow, Task


def record(session: Session, at: datetime, study_id: int, round: int,
           entry: dict[str, Any] | None) -> None:
    if entry is not None:
        session.add(StudyProgressRow(study_id=study_id, round=round, at=at, entry=entry))


def view(session: Session, study: Study) -> StudyProgress:
    rows = session.scalars(select(StudyProgressRow).where(StudyProgressRow.study_id == study.id)
                           .order_by(StudyProgressRow.id))
    done = Counter(t.round for t in session.scalars(
        select(Task).where(Task.study_id == study.id, Task.status == TaskStatus.COMPLETED)))
    total = study.params.get("rounds") if isinstance(study.params, dict) else None
    return StudyProgress(
        study_id=study.id, analysis=study.analysis, status=str(study.status),
        round=study.round, total_rounds=int(total) if isinstance(total, int) else None,
        entries=[ProgressEntry(at=r.at, round=r.round, entry=r.entry) for r in rows],
        nodes_reporting={str(k): v for k, v in sorted(done.items())},
    )
