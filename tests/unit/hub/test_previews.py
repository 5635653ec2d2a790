"""Feasibility previews at the hub: auto-approved, node opt-out, cohort_count only, hourly limit."""

from __future__ import annotations

from hubkit import COHORT, Space

OBFUSCATED = {"count": 45, "min_cell_size": 10, "breakdown": None, "obfuscated": True}
L3_PREVIEWS = {"level": "L3", "previews": {"mode": "obfuscated", "per_hour": 2}}


def test_a_preview_starts_without_approvals_a_study_waits(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, L3_PREVIEWS)
    preview = hub.submit(space.alice, nodes=["node-a"], preview=True,
                         params={"distinct": True})
    assert preview["status"] == "running" and preview["preview"] is True
    assert preview["params"]["distinct"] is False and preview["params"]["breakdown"] is False
    decision = preview["decisions"]["node-a"]
    assert decision["outcome"] == "allow" and decision["approval"] == "not_required"
    assert [r["code"] for r in decision["reasons"]] == ["preview_auto"]
    checked = [e for e in preview["timeline"] if e["event"] == "policy_checked"]
    assert checked[0]["detail"]["reasons"] == ["preview_auto"]
    task = hub.next_task(space.node_a)
    assert task is not None and task["preview"] is True and task["hub_signature"]
    hub.post(space.node_a, task["task_id"], status="completed", partial=OBFUSCATED)
    done = hub.study(space.alice, preview["id"])
    assert done["status"] == "completed" and done["result"]["obfuscated"] is True
    regular = hub.submit(space.alice, nodes=["node-a"])
    assert regular["status"] == "awaiting_approval" and regular["preview"] is False
    assert hub.next_task(space.node_a) is None


def test_previews_off_are_denied_with_the_reason(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L3"})  # L3 default: previews off
    hub.publish_policy(space.node_b, {"level": "L2", "previews": {"mode": "off"}})
    study = hub.submit(space.alice, nodes=["node-a", "node-b"], preview=True)
    assert study["status"] == "rejected"
    assert "does not answer previews (previews.mode: off)" in study["error"]
    reasons = study["decisions"]["node-b"]["reasons"]
    assert (reasons[0]["code"], reasons[0]["field"]) == ("preview_not_allowed", "previews")
    check = hub.ok("POST", "/studies/check", space.alice,
                   json={"analysis": "cohort_count", "cohort": COHORT, "preview": True,
                         "nodes": ["node-a"]})
    assert check["nodes"]["node-a"]["outcome"] == "deny"


def test_a_preview_must_be_a_cohort_count_with_a_cohort(space: Space) -> None:
    hub = space.hub
    for spec in ({"analysis": "summary", "dataset": {"columns": []}},
                 {"analysis": "cohort_count"}):
        response = hub.call("POST", "/studies", space.alice, json={**spec, "preview": True})
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["field"] == "preview"


def test_previews_are_limited_per_organisation_per_rolling_hour(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, L3_PREVIEWS)
    assert hub.submit(space.alice, nodes=["node-a"], preview=True)["status"] == "running"
    hub.clock.advance(minutes=30)
    assert hub.submit(space.bob, nodes=["node-a"], preview=True)["status"] == "running"
    third = hub.submit(space.alice, nodes=["node-a"], preview=True)  # bob is in alice's org
    assert third["status"] == "rejected"
    assert "2 previews in the last hour; the limit is 2 an hour" in third["error"]
    hub.clock.advance(minutes=30)  # the first preview left the window
    assert hub.submit(space.alice, nodes=["node-a"], preview=True)["status"] == "running"
    hub.clock.advance(hours=1)
    assert hub.submit(space.bob, nodes=["node-a"], preview=True)["status"] == "running"


def test_previews_do_not_use_the_daily_study_limit(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "rate_limit_per_day": 1})
    for _ in range(3):
        assert hub.submit(space.alice, nodes=["node-a"], preview=True)["status"] == "running"
    assert hub.submit(space.alice, nodes=["node-a"])["status"] == "running"
    assert hub.submit(space.alice, nodes=["node-a"])["status"] == "rejected"
