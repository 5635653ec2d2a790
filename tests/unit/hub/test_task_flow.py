"""The node work loop end to end: claim, redeliver, post results, combine, more rounds."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hubkit import CC_PARTIAL, Headers, Space

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params


class SumParams(Params):
    rounds: int = 1
    explode: bool = False


class HubTestSum(Analysis):
    """Sums each node's ``x``; asks for ``rounds`` rounds; ``explode`` makes combine raise."""

    name = "hubtest_sum"
    params_model = SumParams
    requires_cohort = False
    max_rounds = 3

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {}

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, SumParams)
        if params.explode:
            raise ZeroDivisionError("combine blew up")
        sums = [*state.get("sums", []), sum(p["x"] for p in partials.values())]
        if round < params.rounds:
            return NextRound(round_input={"previous": sums[-1]}, state={"sums": sums})
        return Final({"sums": sums, "nodes": sorted(partials)})


registry.names()  # load the built-in catalogue first: the registry only loads it when empty
if HubTestSum.name not in registry.names():
    registry.register(HubTestSum())


def _run_round(space: Space, x: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each named node claims its next task and posts ``{"x": value}``; returns the tasks."""
    nodes = {"node-a": space.node_a, "node-b": space.node_b}
    tasks = {}
    for name, value in x.items():
        task = space.hub.next_task(nodes[name])
        assert task is not None
        space.hub.post(nodes[name], task["task_id"], status="completed", partial={"x": value})
        tasks[name] = task
    return tasks


def test_cohort_count_over_two_nodes(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a", "node-b"], purpose="public_health")
    assert study["status"] == "running" and [t["status"] for t in study["tasks"]] == ["queued"] * 2
    task_a = hub.next_task(space.node_a)
    task_b = hub.next_task(space.node_b)
    assert task_a is not None and task_b is not None
    assert task_a["study_id"] == study["id"] and task_a["analysis"] == "cohort_count"
    assert (task_a["consumer"], task_a["purpose"], task_a["min_cell_size"]) == (
        "alice",
        "public_health",
        10,
    )
    assert task_a["cohort"] == study["cohort"]
    assert task_a["params"] == {"breakdown": True, "dp_epsilon": None, "obfuscate": False,
                                "distinct": False, "distinct_salt": None,
                                "distinct_precision": 14}
    hub.clock.advance(seconds=30)
    ack = hub.post(
        space.node_a,
        task_a["task_id"],
        status="completed",
        partial=CC_PARTIAL,
        metrics={"records": 42, "seconds": 0.5, "bytes": 300},
    )
    assert ack == {"task_id": task_a["task_id"], "accepted": True, "duplicate": False}
    assert hub.study(space.alice, study["id"])["status"] == "running"
    hub.post(
        space.node_b,
        task_b["task_id"],
        status="completed",
        partial={"count": "<10", "min_cell_size": 10, "breakdown": None},
    )
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "completed" and done["error"] is None
    assert done["result"]["sites"] == {"node-a": 42, "node-b": "<10"}
    assert done["result"]["total"] == 42 and done["result"]["total_is_lower_bound"] is True
    assert {t["status"] for t in done["tasks"]} == {"completed"}
    assert done["tasks"][0]["finished_at"] == "2025-03-01T09:00:30Z"
    assert hub.next_task(space.node_a) is None


def test_duplicate_result_changes_nothing(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    before = hub.study(space.alice, study["id"])
    hub.clock.advance(minutes=5)
    other = {"count": 99, "min_cell_size": 10, "breakdown": None}
    ack = hub.post(space.node_a, task["task_id"], status="completed", partial=other)
    assert ack == {"task_id": task["task_id"], "accepted": True, "duplicate": True}
    assert hub.study(space.alice, study["id"]) == before


def test_a_failed_node_makes_the_study_partial(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    task_a, task_b = hub.next_task(space.node_a), hub.next_task(space.node_b)
    assert task_a is not None and task_b is not None
    hub.post(space.node_b, task_b["task_id"], status="refused", error="purpose not allowed")
    hub.post(space.node_a, task_a["task_id"], status="completed", partial=CC_PARTIAL)
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "partial"
    assert done["result"]["sites"] == {"node-a": 42}
    assert done["error"] == "node-b: refused: purpose not allowed"


def test_no_completed_node_fails_the_study(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    for node in (space.node_a, space.node_b):
        task = hub.next_task(node)
        assert task is not None
        hub.post(node, task["task_id"], status="failed", error="cdm store missing")
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "failed" and done["result"] is None
    assert "node-a: failed: cdm store missing" in done["error"]
    assert "node-b: failed" in done["error"]


def test_running_task_is_redelivered_after_a_node_restart(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    first = hub.next_task(space.node_a)
    second = hub.next_task(space.node_a)  # the node crashed before posting and asks again
    assert first is not None and first == second
    task = hub.study(space.alice, study["id"])["tasks"][0]
    assert (task["status"], task["attempts"]) == ("running", 2)


def test_nodes_see_only_their_own_tasks(space: Space) -> None:
    hub = space.hub
    hub.submit(space.alice, nodes=["node-b"])
    assert hub.next_task(space.node_a) is None
    task = hub.next_task(space.node_b)
    assert task is not None
    response = hub.post_raw(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    assert response.status_code == 403
    response = hub.post_raw(space.node_a, 9999, status="completed", partial=CC_PARTIAL)
    assert response.status_code == 404


def test_multi_round_study(space: Space) -> None:
    hub = space.hub
    study = hub.submit(
        space.alice, analysis="hubtest_sum", params={"rounds": 2}, nodes=["node-a", "node-b"]
    )
    first = _run_round(space, {"node-a": 1, "node-b": 2})
    assert first["node-a"]["round"] == 1 and first["node-a"]["round_input"] is None
    middle = hub.study(space.alice, study["id"])
    assert (middle["status"], middle["round"]) == ("running", 2)
    second = _run_round(space, {"node-a": 10, "node-b": 20})
    assert second["node-b"]["round"] == 2 and second["node-b"]["round_input"] == {"previous": 3}
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"sums": [3, 30], "nodes": ["node-a", "node-b"]}
    assert [(t["node"], t["round"]) for t in done["tasks"]] == [
        ("node-a", 1),
        ("node-b", 1),
        ("node-a", 2),
        ("node-b", 2),
    ]


def test_a_node_failing_mid_study_drops_out_of_later_rounds(space: Space) -> None:
    hub = space.hub
    study = hub.submit(
        space.alice, analysis="hubtest_sum", params={"rounds": 2}, nodes=["node-a", "node-b"]
    )
    _run_round(space, {"node-a": 5})
    task_b = hub.next_task(space.node_b)
    assert task_b is not None
    hub.post(space.node_b, task_b["task_id"], status="failed", error="out of memory")
    assert hub.next_task(space.node_b) is None  # no round 2 for the node that failed
    _run_round(space, {"node-a": 7})
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "partial" and done["result"] == {"sums": [5, 7], "nodes": ["node-a"]}
    assert done["error"] == "node-b: failed: out of memory"


def test_combine_failure_fails_the_study_not_the_hub(space: Space) -> None:
    hub = space.hub
    study = hub.submit(
        space.alice, analysis="hubtest_sum", params={"explode": True}, nodes=["node-a"]
    )
    _run_round(space, {"node-a": 1})
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"] == "combine failed in round 1: ZeroDivisionError: combine blew up"


def test_too_many_rounds_fail_the_study(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, analysis="hubtest_sum", params={"rounds": 9}, nodes=["node-a"])
    for value in (1, 2, 3):
        _run_round(space, {"node-a": value})
    done = hub.study(space.alice, study["id"])
    assert (done["status"], done["round"]) == ("failed", 3)
    assert "within 3 round(s)" in done["error"]
    assert hub.next_task(space.node_a) is None


def test_concurrent_results_combine_exactly_once(space: Space) -> None:
    hub = space.hub
    studies = [
        hub.submit(
            space.alice, analysis="hubtest_sum", params={"rounds": 2}, nodes=["node-a", "node-b"]
        )
        for _ in range(4)
    ]

    def work(node: Headers, value: int) -> None:
        while (task := hub.next_task(node)) is not None:
            hub.post(node, task["task_id"], status="completed", partial={"x": value})

    for _ in range(2):  # two rounds; the second round's tasks appear once both posted
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(work, [space.node_a, space.node_b], [1, 2]))
    for study in studies:
        done = hub.study(space.alice, study["id"])
        assert done["status"] == "completed", done
        assert done["result"]["sums"] == [3, 3] and len(done["tasks"]) == 4
