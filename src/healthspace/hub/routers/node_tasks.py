"""The node's side of the work queue: long-poll for the next signed task, post a signed result."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from healthspace.core.envelope import Envelope
from healthspace.core.models import TaskAck, TaskAssignment
from healthspace.hub.auth import require_node
from healthspace.hub.deps import HubState, hub_state
from healthspace.hub.notifier import long_poll, node_topic, study_topic
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import RowId, sweep_deadlines
from healthspace.hub.services import nodes, tasks
from healthspace.hub.settings import MAX_WAIT_SECONDS

router = APIRouter(prefix="/node/tasks", tags=["node"])


@router.get(
    "/next",
    response_model=TaskAssignment,
    responses={204: {"description": "no task within the wait"}},
)
async def next_task(
    request: Request,
    wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="long-poll seconds"),
    principal: Principal = Depends(require_node()),
    hub: HubState = Depends(hub_state),
) -> TaskAssignment | Response:
    def touch() -> None:
        with hub.sessions() as session:
            nodes.touch(session, hub.clock, principal.id)
        sweep_deadlines(hub)

    def check() -> TaskAssignment | None:
        with hub.sessions() as session:
            return tasks.next_task(session, hub.clock, principal.id)

    await run_in_threadpool(touch)

    assignment = await long_poll(
        hub.notifier,
        node_topic(principal.id),
        check,
        lambda found: found is not None,
        wait=wait,
        recheck=hub.settings.recheck_seconds,
        gone=request.is_disconnected,
    )
    if assignment is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return assignment


@router.post("/{task_id}/result", response_model=TaskAck)
def post_result(
    task_id: RowId,
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    hub: HubState = Depends(hub_state),
) -> TaskAck:
    """An Envelope(kind="task.result", study_id, round, payload=TaskResult); fresh per post."""
    # The session is opened here, not by a dependency: every result would otherwise pay two
    # more worker-thread hops (the dependency's enter and exit).
    with hub.sessions() as session:
        done = tasks.record_result(session, hub.clock, hub.settings, principal.id, task_id,
                                   envelope)
    # A study's long-pollers wait for its status to change: only a closed round wakes them.
    topics = [study_topic(done.study_id)] if done.moved else []
    hub.notifier.notify(*topics, *(node_topic(n) for n in done.woken))
    return done.ack
