"""Round completion: once every task of a round is terminal, combine and finish or go again."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from healthspace.analyses import registry
from healthspace.analyses.base import Final, NextRound
from healthspace.analyses.secure import combine_masked
from healthspace.core.clock import Clock
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.hub.db.models import Node, StoredEnvelope, Study, Task
from healthspace.hub.db.session import rowcount
from healthspace.hub.services import audit, billing, models, progress, secagg, timeline
from healthspace.hub.settings import HubSettings
from healthspace.privacy.secagg import DropoutError


def queue_round(
    session: Session,
    clock: Clock,
    study: Study,
    nodes: list[Node],
    *,
    round: int,
    min_cell_size: Mapping[int, int],
    round_input: dict[str, Any] | None = None,
) -> str | None:
    """Queue a task per node; ``min_cell_size`` maps node id -> that node's threshold.

    Returns why the round cannot run securely (the caller fails the study), else None.
    """
    now = clock.now()
    tasks = [
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
        for node in nodes
    ]
    session.add_all(tasks)
    return attach_secure(session, clock, study, tasks)


def attach_secure(session: Session, clock: Clock, study: Study, tasks: list[Task]) -> str | None:
    """Put a secure study's queued tasks of one round into a secure-aggregation session.

    A node without an unused prekey at the hub cannot take part: its task is refused. With
    one queued task there is nothing to hide a partial among, and the node's own disclosure
    control applies as in any single-node study. Returns an error when fewer than two nodes
    with prekeys remain.
    """
    queued = [t for t in tasks if t.status == TaskStatus.QUEUED]
    if not study.secure or len(queued) < 2 or not registry.get(study.analysis).secure:
        return None
    session.flush()
    row, keyless = secagg.session_for(session, clock, study, [t.node for t in queued])
    now = clock.now()
    for task in queued:
        if task.node in keyless:
            task.status, task.finished_at = TaskStatus.REFUSED, now
            task.error = ("no secure-aggregation prekey from this node at the hub; the node "
                          "uploads them when it polls (is it running?)")
        else:
            task.secagg_session_id = row.id if row is not None else None
    if row is None:
        names = ", ".join(sorted(n.name for n in keyless)) or "none"
        return ("secure aggregation needs at least two nodes with prekeys at the hub "
                f"(nodes without: {names})")
    timeline.record(session, now, study.id, "secure_session", secagg_session=row.name,
                    nodes=row.nodes, round=queued[0].round)
    return None


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


def _partials(session: Session, tasks: list[Task]) -> dict[str, dict[str, Any]]:
    """Each completed task's partial, read from the signed envelope that carried it."""
    done = {t.envelope_id: t.node.name for t in tasks
            if t.status == TaskStatus.COMPLETED and t.envelope_id is not None}
    rows = session.execute(select(StoredEnvelope.id, StoredEnvelope.body)
                           .where(StoredEnvelope.id.in_(done))).all()
    return {done[i]: body["payload"].get("partial") or {} for i, body in rows}


RERUNS = "_secure_reruns"  # hub-owned key in the study state: rounds repeated after dropouts


def _outcome(study: Study, tasks: list[Task], completed: dict[str, dict[str, Any]],
             problems: str | None) -> tuple[dict[str, Any], Any]:
    """The study update for a finished round and, for another round, what to queue.

    A secure round rerun after a dropout gets the next task round number, so the analysis is
    told its own round (task round minus reruns) and never sees the hub's bookkeeping key.
    """
    if not completed:
        return {"status": StudyStatus.FAILED, "error": problems or "no node completed"}, None
    survivors = [t for t in tasks if t.status == TaskStatus.COMPLETED]
    secure = any(t.secagg_session_id is not None for t in tasks)
    state = dict(study.state or {})
    reruns = int(state.pop(RERUNS, 0))
    logical = study.round - reruns
    try:
        analysis = registry.get(study.analysis)
        params = analysis.parse_params(study.params)
        if secure:
            try:
                outcome = combine_masked(analysis, completed, params, state, logical)
            except DropoutError as exc:
                return _rerun(study, survivors, tasks, exc, reruns)
        else:
            outcome = analysis.combine(completed, params, state, logical)
        progress = json.loads(json.dumps(outcome.progress)) if outcome.progress else None
        if isinstance(outcome, Final):
            result = json.loads(json.dumps(outcome.result))  # must be plain JSON to be stored
            status = StudyStatus.PARTIAL if problems else StudyStatus.COMPLETED
            deliveries = json.loads(json.dumps(outcome.deliveries)) if outcome.deliveries \
                else None
            return {"status": status, "result": result, "deliveries": deliveries,
                    "error": problems, "_progress": progress}, None
        if not isinstance(outcome, NextRound):
            raise TypeError(f"combine returned {type(outcome).__name__}, not Final or NextRound")
        if logical + 1 > analysis.max_rounds:
            message = f"{analysis.name} did not finish within {analysis.max_rounds} round(s)"
            return {"status": StudyStatus.FAILED, "error": message}, None
        next_state = json.loads(json.dumps(outcome.state))
        if reruns:
            next_state[RERUNS] = reruns
        round_input = json.loads(json.dumps(outcome.round_input))
    except Exception as exc:  # a broken combine fails the study; it must never crash the hub
        message = f"combine failed in round {logical}: {type(exc).__name__}: {exc}"
        return {"status": StudyStatus.FAILED, "error": message}, None
    return ({"round": study.round + 1, "state": next_state, "_progress": progress},
            (survivors, round_input))


def _rerun(study: Study, survivors: list[Task], tasks: list[Task],
           exc: DropoutError, reruns: int) -> tuple[dict[str, Any], Any]:
    """Masks of a missing node cannot cancel: run the same round again, without it, in a new
    session (fresh one-time keys); the survivors' masked payloads stay noise. Compact-ring
    scales are dropped from the rerun's input, in case a bound was what failed."""
    if len(survivors) < 2:
        message = (f"secure aggregation round {study.round} lost {', '.join(exc.missing)} and "
                   f"fewer than two nodes remain")
        return {"status": StudyStatus.FAILED, "error": message}, None
    round_input = tasks[0].round_input
    if round_input is not None:
        round_input = {k: v for k, v in round_input.items() if k != "secure_scales"}
    state = {**(study.state or {}), RERUNS: reruns + 1}
    return ({"round": study.round + 1, "state": state, "_rerun": list(exc.missing)},
            (survivors, round_input))


class Advanced(NamedTuple):
    """What :func:`advance` did: whether it closed the round (the study's status or round
    changed), and the ids of nodes given new tasks."""

    moved: bool
    woken: Sequence[int]


STILL = Advanced(False, ())
OPEN = (TaskStatus.QUEUED, TaskStatus.RUNNING)


# Every result but a round's last stops at this read (built once, see tokens._PRINCIPAL).
_OPEN_IN_ROUND = select(exists().where(Task.study_id == bindparam("study_id"),
                                       Task.round == bindparam("round"), Task.status.in_(OPEN)))


def advance(
    session: Session, clock: Clock, settings: HubSettings, study_id: int, round: int
) -> Advanced:
    """Close ``round`` of a running study if all its tasks are terminal; idempotent and race-safe.

    Concurrent callers may all combine, but only the one whose compare-and-set on (status,
    round) succeeds writes anything. A study that finishes with a result is settled in the
    same transaction (:mod:`.billing`). Every result but a round's last finds a task still
    open in one indexed read and stops there.
    """
    session.expire_all()
    if session.scalar(_OPEN_IN_ROUND, {"study_id": study_id, "round": round}):
        return STILL
    study = session.get(Study, study_id)
    if study is None or study.status != StudyStatus.RUNNING or study.round != round:
        return STILL
    tasks = list(
        session.scalars(select(Task).where(Task.study_id == study_id, Task.round == round))
    )
    if not tasks or not all(TaskStatus(t.status).terminal for t in tasks):
        return STILL
    values, again = _outcome(study, tasks, _partials(session, tasks), _problems(session, study_id))
    rerun = values.pop("_rerun", None)
    entry = values.pop("_progress", None)
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
        return STILL
    progress.record(session, now, study_id, round, entry)
    if "status" in values:
        timeline.status_changed(session, now, study_id, StudyStatus(values["status"]))
        if values["status"] in (StudyStatus.COMPLETED, StudyStatus.PARTIAL):
            session.refresh(study)
            billing.settle(session, now, settings, study)
            models.register(session, now, study)
    if rerun:
        timeline.record(session, now, study_id, "secure_rerun", round=round, missing=rerun)
        audit.queue(session, "hub", "secagg.rerun", f"study:{study_id}",
                    {"round": round, "missing": rerun})
    woken: list[int] = []
    if again is not None:
        survivors, round_input = again
        nodes = [t.node for t in survivors]
        failed = queue_round(
            session,
            clock,
            study,
            nodes,
            round=round + 1,
            min_cell_size={t.node_id: t.min_cell_size for t in survivors},
            round_input=round_input,
        )
        if failed is not None:
            session.rollback()
            fail(session, clock, study_id, failed)
            return Advanced(True, [])
        woken = [n.id for n in nodes]
    session.commit()
    return Advanced(True, woken)


def fail(session: Session, clock: Clock, study_id: int, error: str) -> None:
    """Fail a running study (nothing queued); the caller commits."""
    now = clock.now()
    changed = rowcount(
        session,
        update(Study)
        .where(Study.id == study_id, Study.status == StudyStatus.RUNNING)
        .values(status=StudyStatus.FAILED, error=error, updated_at=now, finished_at=now),
    )
    if changed:
        timeline.status_changed(session, now, study_id, StudyStatus.FAILED)
    session.commit()
