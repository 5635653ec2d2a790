"""Round completion: once every task of a round is terminal, combine and finish or go again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from healthspace.analyses import registry
from healthspace.analyses.base import Final, NextRound
from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.hub.db.models import Node, Study, Task
from healthspace.hub.db.session import rowcount
from healthspace.hub.services import timeline


def queue_round(
    session: Session,
    clock: Clock,
    study: Study,
    nodes: list[Node],
    *,
    round: int,
    min_cell_size: Mapping[int, int],
    round_input: dict[str, Any] | None = None,
) -> None:
    """Queue a task per node; ``min_cell_size`` maps node id -> that node's threshold."""
    now = clock.now()
    for node in nodes:
        session.add(
            Task(
                study=study,
                node=node,
                round=round,
                status=TaskStatus.QUEUED,
                round_input=round_input,
                min_cell_size=min_cell_size[node.id],
                queued_at=now,
                attempts=0,
            )
        )


def _problems(session: Session, study_id: int) -> str | None:
    """Per-node failures and refusals over all rounds, e.g. ``b: refused: consent``."""
    rows = session.scalars(
        select(Task)
        .where(Task.study_id == study_id, Task.status.in_((TaskStatus.FAILED, TaskStatus.REFUSED)))
        .order_by(Task.round, Task.id)
    )
    parts = [
        f"{t.node.name}{f' (round {t.round})' if t.round > 1 else ''}: {t.status}: {t.error}"
        for t in rows
    ]
    return "; ".join(parts) or None


def _outcome(study: Study, tasks: list[Task], problems: str | None) -> tuple[dict[str, Any], Any]:
    """The study update for a finished round and, for another round, what to queue."""
    completed = {t.node.name: t.partial or {} for t in tasks if t.status == TaskStatus.COMPLETED}
    if not completed:
        return {"status": StudyStatus.FAILED, "error": problems or "no node completed"}, None
    try:
        analysis = registry.get(study.analysis)
        params = analysis.parse_params(study.params)
        outcome = analysis.combine(completed, params, dict(study.state or {}), study.round)
        if isinstance(outcome, Final):
            result = json.loads(json.dumps(outcome.result))  # must be plain JSON to be stored
            status = StudyStatus.PARTIAL if problems else StudyStatus.COMPLETED
            return {"status": status, "result": result, "error": problems}, None
        if not isinstance(outcome, NextRound):
            raise TypeError(f"combine returned {type(outcome).__name__}, not Final or NextRound")
        if study.round + 1 > analysis.max_rounds:
            message = f"{analysis.name} did not finish within {analysis.max_rounds} round(s)"
            return {"status": StudyStatus.FAILED, "error": message}, None
        state = json.loads(json.dumps(outcome.state))
        round_input = json.loads(json.dumps(outcome.round_input))
    except Exception as exc:  # a broken combine fails the study; it must never crash the hub
        message = f"combine failed in round {study.round}: {type(exc).__name__}: {exc}"
        return {"status": StudyStatus.FAILED, "error": message}, None
    survivors = [t for t in tasks if t.status == TaskStatus.COMPLETED]
    return {"round": study.round + 1, "state": state}, (survivors, round_input)


def advance(session: Session, clock: Clock, study_id: int, round: int) -> list[int]:
    """Close ``round`` of a running study if all its tasks are terminal; idempotent and race-safe.

    Returns the ids of nodes given new tasks. Concurrent callers may all combine, but only
    the one whose compare-and-set on (status, round) succeeds writes anything.
    """
    session.expire_all()
    study = session.get(Study, study_id)
    if study is None or study.status != StudyStatus.RUNNING or study.round != round:
        return []
    tasks = list(
        session.scalars(select(Task).where(Task.study_id == study_id, Task.round == round))
    )
    if not tasks or not all(TaskStatus(t.status).terminal for t in tasks):
        return []
    values, again = _outcome(study, tasks, _problems(session, study_id))
    now = clock.now()
    values["updated_at"] = now
    if "status" in values:
        values["finished_at"] = now
    changed = rowcount(
        session,
        update(Study)
        .where(Study.id == study_id, Study.status == StudyStatus.RUNNING, Study.round == round)
        .values(**values),
    )
    if not changed:
        session.rollback()
        return []
    if "status" in values:
        timeline.status_changed(session, now, study_id, StudyStatus(values["status"]))
    woken: list[int] = []
    if again is not None:
        survivors, round_input = again
        nodes = [t.node for t in survivors]
        queue_round(
            session,
            clock,
            study,
            nodes,
            round=round + 1,
            min_cell_size={t.node_id: t.min_cell_size for t in survivors},
            round_input=round_input,
        )
        woken = [n.id for n in nodes]
    session.commit()
    return woken
