"""Round time-outs: with ``round_timeout_seconds`` a node that has not answered a round that
long after it was queued is dropped (its task fails, "timed out"), and the study goes on with
the nodes that answered. Swept lazily on node polls and study reads; time moves only when the
test's FixedClock is advanced.
"""

from __future__ import annotations

from typing import Any

import pytest
from flkit import answer, site_table
from hubkit import CC_PARTIAL, Space

TIMEOUT = 30


def _count_study(space: Space) -> dict[str, Any]:
    study = space.hub.submit(space.alice, nodes=["node-a", "node-b"],
                             round_timeout_seconds=TIMEOUT)
    assert study["status"] == "running" and study["round_timeout_seconds"] == TIMEOUT
    return study


def _tasks(view: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(t["node"], t["round"]): t for t in view["tasks"]}


def _timed_out_events(view: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(e["node"], e["detail"]) for e in view["timeline"] if e["event"] == "task_timed_out"]


def _sweep_by(space: Space, how: str, study_id: int) -> None:
    """Something that sweeps deadlines: a node's poll, a read of the study or its progress."""
    if how == "node poll":
        assert space.hub.next_task(space.node_a) is None
    elif how == "study read":
        space.hub.study(space.alice, study_id)
    else:
        space.hub.ok("GET", f"/studies/{study_id}/progress", space.alice)


@pytest.mark.parametrize("sweep", ["node poll", "study read", "progress read"])
def test_an_overdue_node_is_dropped_and_the_study_ends_with_the_others(
    space: Space, sweep: str
) -> None:
    hub = space.hub
    study = _count_study(space)
    task_a = hub.next_task(space.node_a)
    assert task_a is not None
    hub.post(space.node_a, task_a["task_id"], status="completed", partial=CC_PARTIAL)
    task_b = hub.next_task(space.node_b)  # node-b takes its task and never answers
    assert task_b is not None and task_b["study_id"] == study["id"]

    hub.clock.advance(seconds=TIMEOUT + 1)
    _sweep_by(space, sweep, study["id"])

    view = hub.ok("GET", f"/studies/{study['id']}", hub.operator)
    assert view["status"] == "partial"
    assert view["result"]["sites"] == {"node-a": CC_PARTIAL["count"]}
    assert view["result"]["total"] == CC_PARTIAL["count"]
    dropped = _tasks(view)[("node-b", 1)]
    assert dropped["status"] == "failed"
    assert dropped["error"].startswith("timed out")
    assert f"{TIMEOUT} s" in dropped["error"]
    assert _tasks(view)[("node-a", 1)]["status"] == "completed"
    assert view["error"] is not None and view["error"].startswith("node-b: failed: timed out")
    assert _timed_out_events(view) == [("node-b", {"round": 1, "timeout_seconds": TIMEOUT})]
    ledger = hub.ok("GET", "/audit/entries?limit=1000", hub.operator)
    assert [(e["actor"], e["subject"]) for e in ledger if e["action"] == "task.timed_out"] == [
        ("hub", f"study:{study['id']}")]
    assert hub.next_task(space.node_b) is None  # the failed task is not redelivered


def test_nothing_times_out_before_the_deadline(space: Space) -> None:
    hub = space.hub
    study = _count_study(space)
    task_a = hub.next_task(space.node_a)
    assert task_a is not None
    hub.post(space.node_a, task_a["task_id"], status="completed", partial=CC_PARTIAL)

    hub.clock.advance(seconds=TIMEOUT - 1)  # node-b has not even polled
    assert hub.next_task(space.node_a) is None
    view = hub.study(space.alice, study["id"])
    assert hub.ok("GET", f"/studies/{study['id']}/progress", space.alice)["status"] == "running"
    assert view["status"] == "running" and view["result"] is None
    assert _tasks(view)[("node-b", 1)]["status"] == "queued"
    assert _timed_out_events(view) == []

    hub.clock.advance(seconds=1)  # exactly the timeout after the round was queued
    view = hub.study(space.alice, study["id"])
    assert view["status"] == "partial"
    assert _tasks(view)[("node-b", 1)]["error"].startswith("timed out")


def test_a_late_answer_is_a_duplicate_and_changes_nothing(space: Space) -> None:
    hub = space.hub
    study = _count_study(space)
    task_a = hub.next_task(space.node_a)
    task_b = hub.next_task(space.node_b)
    assert task_a is not None and task_b is not None
    hub.post(space.node_a, task_a["task_id"], status="completed", partial=CC_PARTIAL)
    hub.clock.advance(seconds=TIMEOUT + 1)
    before = hub.study(space.alice, study["id"])
    assert before["status"] == "partial"

    hub.clock.advance(seconds=5)
    late = {**CC_PARTIAL, "count": 99}
    ack = hub.post(space.node_b, task_b["task_id"], status="completed", partial=late)
    assert ack == {"task_id": task_b["task_id"], "accepted": True, "duplicate": True}
    after = hub.study(space.alice, study["id"])
    assert after == before
    assert after["result"]["sites"] == {"node-a": CC_PARTIAL["count"]}


@pytest.mark.parametrize("seconds", [1, 4, 7 * 86400 + 1])
def test_an_out_of_range_timeout_is_rejected_naming_the_field(space: Space,
                                                               seconds: int) -> None:
    response = space.hub.call("POST", "/studies", space.alice, json={
        "analysis": "cohort_count", "cohort": {"entry": {"condition": {"codes": ["ICD10:K92%"]}}},
        "round_timeout_seconds": seconds})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["field"] == "body.round_timeout_seconds"
    assert space.hub.ok("GET", "/studies", space.alice)["studies"] == []


def test_the_shortest_timeout_is_accepted(space: Space) -> None:
    study = space.hub.submit(space.alice, round_timeout_seconds=5)
    assert study["round_timeout_seconds"] == 5


# ---------------------------------------------------------------- multi-round training

def test_a_node_timed_out_mid_training_gets_no_more_rounds(space: Space) -> None:
    hub = space.hub
    nodes = {"node-a": space.node_a, "node-b": space.node_b}
    cons = {name: site_table(name) for name in nodes}
    study = hub.submit(space.alice, analysis="fl_train", nodes=list(nodes),
                       round_timeout_seconds=TIMEOUT,
                       params={"target": "y", "features": ["x1", "x2"], "rounds": 2})
    # hub rounds 1-2 (statistics, moments): both answer
    for round_ in (1, 2):
        for name, headers in nodes.items():
            task = hub.next_task(headers)
            assert task is not None and task["round"] == round_
            answer(hub, name, headers, task, cons[name])
    # hub round 3 (training round 1): node-a answers, node-b takes its task and goes silent
    task = hub.next_task(space.node_a)
    assert task is not None and task["round"] == 3
    answer(hub, "node-a", space.node_a, task, cons["node-a"])
    silent = hub.next_task(space.node_b)
    assert silent is not None and silent["round"] == 3
    assert hub.next_task(space.node_a) is None  # the round waits for node-b

    hub.clock.advance(seconds=TIMEOUT + 1)
    for round_ in (4, 5):  # node-a's poll closes round 3 without node-b
        task = hub.next_task(space.node_a)
        assert task is not None and task["round"] == round_
        assert hub.next_task(space.node_b) is None
        answer(hub, "node-a", space.node_a, task, cons["node-a"])

    view = hub.study(space.alice, study["id"])
    assert view["status"] == "partial"
    tasks = _tasks(view)
    assert tasks[("node-b", 3)]["status"] == "failed"
    assert tasks[("node-b", 3)]["error"].startswith("timed out")
    assert sorted(tasks) == sorted([(n, r) for n in nodes for r in (1, 2, 3)]
                                   + [("node-a", 4), ("node-a", 5)])
    assert _timed_out_events(view) == [("node-b", {"round": 3, "timeout_seconds": TIMEOUT})]
    assert "node-b (round 3): failed: timed out" in view["error"]
    result = view["result"]
    assert result["nodes"] == ["node-a"]
    assert [w for w in result["warnings"] if "node-b" in w] == [
        "round 1: dropped node-b (failed or timed out); 1 node(s) continue"]
    assert [r["nodes"] for r in result["rounds"]] == [1, 1]
    assert result["rounds"][0]["dropped"] == ["node-b"]
    progress = hub.ok("GET", f"/studies/{study['id']}/progress", space.alice)
    assert progress["nodes_reporting"] == {"1": 2, "2": 2, "3": 1, "4": 1, "5": 1}
    assert progress["entries"][0]["entry"]["dropped"] == ["node-b"]
