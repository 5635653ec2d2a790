"""Run one task assignment on the node's read-only CDM store and produce a TaskResult."""

from __future__ import annotations

import logging
from pathlib import Path

from healthspace.analyses.execute import run_local
from healthspace.cdm.store import open_store
from healthspace.core.clock import Clock
from healthspace.core.enums import TaskStatus
from healthspace.core.errors import HealthspaceError, InvalidInput, Refused
from healthspace.core.models import TaskAssignment, TaskMetrics, TaskResult

log = logging.getLogger(__name__)


def run_task(
    store: Path,
    assignment: TaskAssignment,
    *,
    site: str,
    min_cell_size: int = 10,
    clock: Clock | None = None,
) -> TaskResult:
    """Never raises: a refusal or failure becomes a TaskResult the hub can report per node.

    The node applies the stricter of its own minimum cell size and the task's.
    """
    k = max(assignment.min_cell_size, min_cell_size)
    try:
        con = open_store(store, read_only=True)
        try:
            run = run_local(
                con,
                site=site,
                analysis=assignment.analysis,
                params=assignment.params,
                cohort=assignment.cohort,
                round_input=assignment.round_input,
                min_cell_size=k,
                purpose=assignment.purpose,
                clock=clock,
            )
        finally:
            con.close()
    except Refused as exc:
        return TaskResult(status=TaskStatus.REFUSED, error=str(exc))
    except InvalidInput as exc:
        # The hub validated this request; a node that still finds it invalid refuses it.
        return TaskResult(status=TaskStatus.REFUSED, error=f"invalid request: {exc}")
    except HealthspaceError as exc:
        return TaskResult(status=TaskStatus.FAILED, error=str(exc))
    except Exception as exc:  # report, do not crash the agent; details stay in the node log
        log.exception("task %s failed", assignment.task_id)
        return TaskResult(status=TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000])
    return TaskResult(
        status=TaskStatus.COMPLETED,
        partial=run.partial,
        metrics=TaskMetrics(records=run.records, seconds=run.seconds, bytes=run.bytes),
    )
