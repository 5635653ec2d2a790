"""Helpers shared by the operations tests."""

from __future__ import annotations

from hubkit import CC_PARTIAL, Space


def run_history(space: Space) -> dict[str, int]:
    """Studies in several states: two completed, one awaiting approval, one cancelled."""
    hub = space.hub
    ids: dict[str, int] = {}
    for name in ("first", "second"):
        study = hub.submit(space.alice, nodes=["node-a"])
        task = hub.next_task(space.node_a)
        assert task is not None
        hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
        ids[name] = int(study["id"])
    hub.publish_policy(space.node_b, {"level": "L2", "version": 2})  # approvals from now on
    ids["awaiting"] = int(hub.submit(space.bob, nodes=["node-b"])["id"])
    cancelled = int(hub.submit(space.bob, nodes=["node-b"])["id"])
    hub.ok("POST", f"/studies/{cancelled}/cancel", space.bob)
    ids["cancelled"] = cancelled
    hub.client.app.state.hub.audit.flush()  # type: ignore[attr-defined]
    return ids
