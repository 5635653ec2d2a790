"""Policy publication by nodes and the hub's per-node pre-check at submit (and as a dry run)."""

from __future__ import annotations

from hubkit import CC_PARTIAL, COHORT, Space

SPEC = {"analysis": "cohort_count", "cohort": COHORT}


def test_policy_publication(space: Space) -> None:
    hub = space.hub
    published = hub.publish_policy(space.node_a, {"level": "L3", "version": 3})
    assert (published["node"], published["version"]) == ("node-a", 3)
    assert published["policy"]["level"] == "L3" and published["envelope_id"] > 0
    again = hub.publish_policy(space.node_a, {"level": "L3", "version": 3})  # restart: same
    assert again["version"] == 3
    older = hub.seal(space.node_a, "policy", {"policy": {"version": 2}})
    response = hub.call("PUT", "/node/policy", space.node_a, json=older)
    assert response.status_code == 409
    assert response.json()["detail"]["field"] == "payload.policy.version"


def test_invalid_policies_name_the_field(space: Space) -> None:
    hub = space.hub
    for payload, field in [
        ({"policy": {"min_cell_size": 2}}, "payload.policy.min_cell_size"),
        ({"policy": {"level": "L9"}}, "payload.policy.level"),
        ({"policy": {"colour": "red"}}, "payload.policy.colour"),
        ({"rules": {}}, "payload.policy"),
        ({"policy": "strict"}, "payload.policy"),
    ]:
        response = hub.call("PUT", "/node/policy", space.node_a,
                            json=hub.seal(space.node_a, "policy", payload))
        assert response.status_code == 422, (payload, response.text)
        assert response.json()["detail"]["field"] == field


def test_a_node_without_a_policy_is_checked_against_the_defaults(space: Space) -> None:
    hub = space.hub
    hub.node("node-c", "hosp-b", policy={})  # publishes {} -> every default: L2, single
    check = hub.ok("POST", "/studies/check", space.alice, json={**SPEC, "nodes": ["node-c"]})
    assert check["nodes"]["node-c"]["outcome"] == "needs_approval"
    assert check["nodes"]["node-c"]["approval_mode"] == "single"


def test_check_is_a_dry_run(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_b, {"level": "L1", "allowed_purposes": ["research"]})
    spec = {**SPEC, "purpose": "public_health"}
    check = hub.ok("POST", "/studies/check", space.alice, json=spec)
    assert set(check["nodes"]) == {"node-a", "node-b"}
    assert check["nodes"]["node-a"]["outcome"] == "allow"
    denied = check["nodes"]["node-b"]
    assert denied["outcome"] == "deny" and denied["reasons"][0]["code"] == "purpose_not_allowed"
    assert denied["reasons"][0]["field"] == "allowed_purposes"
    assert hub.ok("GET", "/studies", space.alice)["studies"] == []
    assert hub.next_task(space.node_a) is None


def test_a_denying_node_gets_a_refused_task_with_the_reasons(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_b, {"level": "L1", "consumer_deny": ["pharma"]})
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    assert study["status"] == "running"
    tasks = {t["node"]: t for t in study["tasks"]}
    assert tasks["node-a"]["status"] == "queued"
    assert tasks["node-b"]["status"] == "refused"
    assert tasks["node-b"]["error"] == "'pharma' is on this dataset's deny-list"
    assert study["decisions"]["node-b"]["outcome"] == "deny"
    assert study["decisions"]["node-a"]["approval"] == "not_required"
    assert hub.next_task(space.node_b) is None
    task = hub.next_task(space.node_a)
    assert task is not None and task["policy_version"] == 1 and task["approvals"] == []
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "partial"
    assert done["error"] == "node-b: refused: 'pharma' is on this dataset's deny-list"


def test_every_node_denying_rejects_the_study(space: Space) -> None:
    hub = space.hub
    for node in (space.node_a, space.node_b):
        hub.publish_policy(node, {"level": "L1", "allowed_analyses": ["glm"]})
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    assert study["status"] == "rejected"
    assert study["error"].startswith("node-a: analysis 'cohort_count' is not allowed")
    assert [t["status"] for t in study["tasks"]] == ["refused", "refused"]
    assert hub.next_task(space.node_a) is None


def test_rate_limit_per_consumer_per_day(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "rate_limit_per_day": 2})
    first = hub.submit(space.alice, nodes=["node-a"])
    second = hub.submit(space.alice, nodes=["node-a"])
    assert first["status"] == second["status"] == "running"
    check = hub.ok("POST", "/studies/check", space.alice, json={**SPEC, "nodes": ["node-a"]})
    assert check["nodes"]["node-a"]["reasons"][0]["code"] == "rate_limited"
    third = hub.submit(space.alice, nodes=["node-a"])
    assert third["status"] == "rejected" and "limit is 2 a day" in third["error"]
    assert hub.submit(space.bob, nodes=["node-a"])["status"] == "running"  # per consumer
    hub.clock.advance(hours=15)  # past UTC midnight: a new day
    assert hub.submit(space.alice, nodes=["node-a"])["status"] == "running"
