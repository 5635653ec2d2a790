"""Study submission defaults, visibility per role, cancellation and long-polling."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hubkit import CC_PARTIAL, Space, copy_space, open_hub

from healthspace.hub.notifier import node_topic, study_topic
from healthspace.hub.settings import HubSettings


def test_default_nodes_are_hospitals_holding_persons(space: Space) -> None:
    hub = space.hub
    empty = hub.ok("POST", "/nodes", hub.operator, 201, json={"name": "node-new", "org": "hosp-b"})
    assert empty["created"]  # enrolled but has published no catalogue yet
    study = hub.submit(space.alice)
    assert study["nodes"] == ["node-a", "node-b"]  # not the payer, not the empty node
    assert [t["node"] for t in study["tasks"]] == ["node-a", "node-b"]


def test_operator_may_submit_and_min_cell_size_has_a_floor(
    space_template: Space, tmp_path: Path
) -> None:
    space = copy_space(space_template, tmp_path, HubSettings(default_min_cell_size=3))
    space.hub.publish_policy(space.node_a, {"level": "L1", "min_cell_size": 5})
    space.hub.submit(space.hub.operator, nodes=["node-a"])
    task = space.hub.next_task(space.node_a)
    assert task is not None and task["min_cell_size"] == 5 and task["consumer"] == "operator"
    assert task["consumer_org"] == "operator"
    space.hub.close()


def test_min_cell_size_is_the_larger_of_policy_and_hub(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "min_cell_size": 20, "version": 2})
    hub.submit(space.alice, nodes=["node-a", "node-b"])
    task_a, task_b = hub.next_task(space.node_a), hub.next_task(space.node_b)
    assert task_a is not None and task_b is not None
    assert (task_a["min_cell_size"], task_b["min_cell_size"]) == (20, 10)


def test_visibility_per_role(space: Space) -> None:
    hub = space.hub
    mine = hub.submit(space.alice, nodes=["node-a"])["id"]
    theirs = hub.submit(space.bob, nodes=["node-b"])["id"]

    def listed(headers: dict[str, str], query: str = "") -> list[int]:
        return [s["id"] for s in hub.ok("GET", f"/studies{query}", headers)["studies"]]

    assert listed(space.alice) == [mine]
    assert listed(space.bob) == [theirs]
    assert listed(space.admin_a) == [mine]
    assert listed(space.admin_b) == [theirs]
    assert listed(space.auditor) == [theirs, mine]
    assert listed(hub.operator) == [theirs, mine]
    assert listed(hub.operator, "?limit=1&offset=1") == [mine]
    assert hub.call("GET", f"/studies/{theirs}", space.alice).status_code == 403
    assert hub.call("GET", f"/studies/{theirs}", space.admin_a).status_code == 403
    assert hub.ok("GET", f"/studies/{theirs}", space.admin_b)["submitted_by"] == "bob"
    assert hub.ok("GET", f"/studies/{mine}", space.auditor)["id"] == mine
    assert hub.call("GET", "/studies/999", space.alice).status_code == 404


def test_status_filter(space: Space) -> None:
    hub = space.hub
    running = hub.submit(space.alice, nodes=["node-a"])["id"]
    cancelled = hub.submit(space.alice, nodes=["node-a"])["id"]
    hub.ok("POST", f"/studies/{cancelled}/cancel", space.alice)
    by_status = {
        status: [
            s["id"] for s in hub.ok("GET", f"/studies?status={status}", space.alice)["studies"]
        ]
        for status in ("running", "cancelled", "completed")
    }
    assert by_status == {"running": [running], "cancelled": [cancelled], "completed": []}


def test_cancel(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    claimed = hub.next_task(space.node_a)
    assert claimed is not None
    assert hub.call("POST", f"/studies/{study['id']}/cancel", space.bob).status_code == 403
    hub.clock.advance(minutes=1)
    view = hub.ok("POST", f"/studies/{study['id']}/cancel", space.alice)
    assert view["status"] == "cancelled" and view["updated_at"] == "2025-03-01T09:01:00Z"
    again = hub.call("POST", f"/studies/{study['id']}/cancel", hub.operator)
    assert again.status_code == 409
    assert hub.next_task(space.node_b) is None  # queued work of a cancelled study is withdrawn
    assert hub.next_task(space.node_a) is None  # and so is running work
    ack = hub.post(space.node_a, claimed["task_id"], status="completed", partial=CC_PARTIAL)
    assert ack["accepted"] is False and ack["duplicate"] is False
    final = hub.study(space.alice, study["id"])
    assert final["status"] == "cancelled" and final["result"] is None


def test_operator_cancels_anyones_study_but_not_a_finished_one(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    response = hub.call("POST", f"/studies/{study['id']}/cancel", hub.operator)
    assert response.status_code == 409
    assert hub.study(space.alice, study["id"])["status"] == "completed"


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        out["value"] = fn()
        out["done"] = time.monotonic()
        out["took"] = out["done"] - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _slow_recheck(space_template: Space, tmp_path: Path) -> Space:
    # A long re-check interval proves the wake-up comes from the notifier, not the timer.
    return copy_space(space_template, tmp_path, HubSettings(recheck_seconds=30))


def test_study_long_poll_returns_as_soon_as_the_result_arrives(
    space_template: Space, tmp_path: Path
) -> None:
    space = _slow_recheck(space_template, tmp_path)
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    notifier = hub.client.app.state.hub.notifier  # type: ignore[attr-defined]
    thread, out = _in_thread(lambda: hub.study(space.alice, study["id"], wait=30))
    _until(lambda: notifier.waiting(study_topic(study["id"])) == 1)
    posted = time.monotonic()
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    thread.join(timeout=10)
    assert out["value"]["status"] == "completed"
    # Far below the 30 s re-check: the notifier woke it (generous for a loaded CI machine).
    assert out["done"] - posted < 5.0
    hub.close()


def test_only_the_result_that_closes_the_round_wakes_the_study(
    space_template: Space, tmp_path: Path
) -> None:
    """A many-node study's long-pollers wait for its status: the first of two results leaves
    them asleep (no re-read per result), the last wakes them at once."""
    space = _slow_recheck(space_template, tmp_path)
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    first, second = hub.next_task(space.node_a), hub.next_task(space.node_b)
    assert first is not None and second is not None
    notifier = hub.client.app.state.hub.notifier  # type: ignore[attr-defined]
    woken: list[str] = []
    notify = notifier.notify
    notifier.notify = lambda *topics: (woken.extend(topics), notify(*topics))[1]
    thread, out = _in_thread(lambda: hub.study(space.alice, study["id"], wait=30))
    _until(lambda: notifier.waiting(study_topic(study["id"])) == 1)
    hub.post(space.node_a, first["task_id"], status="completed", partial=CC_PARTIAL)
    assert study_topic(study["id"]) not in woken
    assert thread.is_alive()
    posted = time.monotonic()
    hub.post(space.node_b, second["task_id"], status="completed", partial=CC_PARTIAL)
    thread.join(timeout=10)
    assert woken.count(study_topic(study["id"])) == 1
    assert out["value"]["status"] == "completed" and out["done"] - posted < 5.0
    hub.close()


def test_node_long_poll_wakes_on_submission_and_times_out_otherwise(
    space_template: Space, tmp_path: Path
) -> None:
    space = _slow_recheck(space_template, tmp_path)
    hub = space.hub
    started = time.monotonic()
    assert hub.next_task(space.node_a, wait=0.3) is None
    assert 0.3 <= time.monotonic() - started < 5
    notifier = hub.client.app.state.hub.notifier  # type: ignore[attr-defined]
    thread, out = _in_thread(lambda: hub.next_task(space.node_a, wait=30))
    _until(lambda: notifier.waiting(node_topic(hub.nodes["node-a"])) == 1)
    submitted = time.monotonic()
    study = hub.submit(space.alice, nodes=["node-a"])
    thread.join(timeout=10)
    assert out["value"]["study_id"] == study["id"]
    assert out["done"] - submitted < 5.0  # the re-check is 30 s: the notifier woke it
    hub.close()


def test_study_long_poll_times_out_with_the_current_state(space: Space) -> None:
    study = space.hub.submit(space.alice, nodes=["node-a"])
    started = time.monotonic()
    view = space.hub.study(space.alice, study["id"], wait=0.3)
    assert view["status"] == "running" and time.monotonic() - started >= 0.3


def test_a_long_poll_is_refused_before_it_waits(space: Space) -> None:
    """Visibility is checked first: another consumer's study is 403 and a missing one 404 at
    once, not after the 30 s wait; the owner's finished study returns its full view at once."""
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    started = time.monotonic()
    theirs = hub.call("GET", f"/studies/{study['id']}?wait=30", space.bob)
    missing = hub.call("GET", f"/studies/{study['id'] + 1000}?wait=30", space.alice)
    assert (theirs.status_code, missing.status_code) == (403, 404)
    assert "may not see" in theirs.json()["detail"]["message"]
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    view = hub.study(space.alice, study["id"], wait=30)
    assert view["status"] == "completed" and view["result"] is not None
    assert [t["status"] for t in view["tasks"]] == ["completed"]
    assert time.monotonic() - started < 10


def test_long_poll_falls_back_to_periodic_recheck(space_template: Space, tmp_path: Path) -> None:
    """A write made by another hub process (whose wake-up we never hear) is still seen."""
    space = copy_space(space_template, tmp_path, HubSettings(recheck_seconds=0.1))
    hub = space.hub
    other_worker = open_hub(hub.url, hub.operator)  # same database, separate app and notifier
    thread, out = _in_thread(lambda: hub.next_task(space.node_a, wait=30))
    notifier = hub.client.app.state.hub.notifier  # type: ignore[attr-defined]
    _until(lambda: notifier.waiting(node_topic(hub.nodes["node-a"])) == 1)
    submitted = time.monotonic()
    other_worker.submit(space.alice, nodes=["node-a"])
    thread.join(timeout=10)
    assert out["value"] is not None and out["done"] - submitted < 5.0  # the wait is 30 s
    other_worker.close()
    hub.close()


def test_the_hub_salts_distinct_counts_with_the_study_id(space):
    study = space.hub.submit(space.alice, nodes=["node-a"], params={"distinct": True})
    assert study["params"]["distinct_salt"] == f"study:{study['id']}"
    chosen = space.hub.submit(space.alice, nodes=["node-a"],
                              params={"distinct": True, "distinct_salt": "mine"})
    assert chosen["params"]["distinct_salt"] == "mine"
