"""Approvals: single and two-level, rejection reaching the consumer, expiry, who may act."""

from __future__ import annotations

from typing import Any

from hubkit import CC_PARTIAL, Headers, Space

from healthspace.governance.engine import Approval


def _awaiting(space: Space, level: str = "L2", nodes: tuple[str, ...] = ("node-a",),
              **policy: Any) -> dict[str, Any]:
    heads = {"node-a": space.node_a, "node-b": space.node_b}
    for name in nodes:
        space.hub.publish_policy(heads[name], {"level": level, **policy})
    study = space.hub.submit(space.alice, nodes=list(nodes))
    assert study["status"] == "awaiting_approval", study
    return study


def _act(space: Space, who: Headers, study_id: int, node: str, verb: str, **body: Any) -> Any:
    return space.hub.call("POST", f"/approvals/{study_id}/{node}/{verb}", who, json=body or None)


def test_single_approval_starts_the_study(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space)
    assert study["tasks"] == [] and hub.next_task(space.node_a) is None
    decision = study["decisions"]["node-a"]
    assert (decision["approval"], decision["missing_steps"]) == ("pending", ["steward"])
    assert decision["expires_at"] == "2025-03-15T09:00:00Z"  # default ttl: 14 days
    pending = hub.ok("GET", "/approvals", space.admin_a)
    assert [(p["study_id"], p["node"], p["status"]) for p in pending] == [
        (study["id"], "node-a", "pending")]
    assert pending[0]["consumer"] == "alice" and pending[0]["consumer_org"] == "pharma"
    assert pending[0]["cohort"] == study["cohort"] and pending[0]["missing_steps"] == ["steward"]
    assert hub.ok("GET", "/approvals", space.admin_b) == []  # another organisation's node
    hub.clock.advance(hours=1)
    response = _act(space, space.admin_a, study["id"], "node-a", "approve", comment="fine")
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["status"], view["steps_done"], view["missing_steps"]) == ("approved",
                                                                          ["steward"], [])
    running = hub.study(space.alice, study["id"])
    assert running["status"] == "running" and running["tasks"][0]["status"] == "queued"
    task = hub.next_task(space.node_a)
    assert task is not None
    [approval] = [Approval.model_validate(a) for a in task["approvals"]]
    assert (approval.step, approval.by, approval.approved) == ("steward", "admin-a", True)
    assert task["submitted_at"] == "2025-03-01T09:00:00Z" and task["consumer_org"] == "pharma"
    assert hub.ok("GET", "/approvals?status=approved", space.admin_a)[0]["node"] == "node-a"
    again = _act(space, space.admin_a, study["id"], "node-a", "approve")
    assert again.status_code == 409 and again.json()["detail"]["field"] == "status"


def test_two_level_approval_needs_steward_then_ethics(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space, "L3")
    early = _act(space, space.admin_a, study["id"], "node-a", "approve", step="ethics",
                 ethics_ref="IRB-1")
    assert early.status_code == 409 and early.json()["detail"]["field"] == "step"
    first = _act(space, space.admin_a, study["id"], "node-a", "approve")  # next step: steward
    assert first.json()["steps_done"] == ["steward"]
    assert first.json()["missing_steps"] == ["ethics"] and first.json()["status"] == "pending"
    assert hub.study(space.alice, study["id"])["status"] == "awaiting_approval"
    missing_ref = _act(space, space.admin_a, study["id"], "node-a", "approve")
    assert missing_ref.status_code == 422
    assert missing_ref.json()["detail"]["field"] == "ethics_ref"
    # the same admin may give both steps; each is recorded under its name
    done = _act(space, space.admin_a, study["id"], "node-a", "approve", ethics_ref="IRB-2025-7")
    assert done.json()["status"] == "approved"
    assert [a["ethics_ref"] for a in done.json()["approvals"]] == [None, "IRB-2025-7"]
    task = hub.next_task(space.node_a)
    assert task is not None and [a["step"] for a in task["approvals"]] == ["steward", "ethics"]


def test_ethics_step_does_not_exist_for_single_mode(space: Space) -> None:
    study = _awaiting(space)
    response = _act(space, space.admin_a, study["id"], "node-a", "approve", step="ethics",
                    ethics_ref="IRB-1")
    assert response.status_code == 422 and response.json()["detail"]["field"] == "step"


def test_rejection_reaches_the_consumer(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space, nodes=("node-a", "node-b"))
    no_comment = _act(space, space.admin_b, study["id"], "node-b", "reject")
    assert no_comment.status_code == 422
    blank = _act(space, space.admin_b, study["id"], "node-b", "reject", comment="  ")
    assert blank.status_code == 422 and blank.json()["detail"]["field"] == "comment"
    rejected = _act(space, space.admin_b, study["id"], "node-b", "reject",
                    comment="cohort too narrow")
    assert rejected.json()["status"] == "rejected"
    waiting = hub.study(space.alice, study["id"])
    assert waiting["status"] == "awaiting_approval"  # node-a is still pending
    reason = waiting["decisions"]["node-b"]["reasons"][0]
    assert reason["code"] == "approval_rejected" and "cohort too narrow" in reason["message"]
    _act(space, space.admin_a, study["id"], "node-a", "approve")
    running = hub.study(space.alice, study["id"])
    tasks = {t["node"]: t for t in running["tasks"]}
    assert tasks["node-b"]["status"] == "refused"
    assert tasks["node-b"]["error"] == "steward approval rejected by admin-b: cohort too narrow"
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "partial" and "cohort too narrow" in done["error"]


def test_rejection_by_every_node_rejects_the_study(space: Space) -> None:
    study = _awaiting(space)
    _act(space, space.hub.operator, study["id"], "node-a", "reject", comment="no")
    view = space.hub.study(space.alice, study["id"])
    assert view["status"] == "rejected"
    assert view["error"] == "node-a: steward approval rejected by operator: no"


def test_pending_approvals_expire(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space, nodes=("node-a", "node-b"), approval_ttl_days=2)
    _act(space, space.admin_b, study["id"], "node-b", "approve")
    hub.clock.advance(days=2)
    assert hub.ok("GET", "/approvals", space.admin_a) == []  # the sweep expired it
    view = hub.study(space.alice, study["id"])
    assert view["status"] == "running"
    tasks = {t["node"]: t for t in view["tasks"]}
    assert (tasks["node-a"]["status"], tasks["node-a"]["error"]) == ("refused", "approval expired")
    assert tasks["node-b"]["status"] == "queued"
    assert view["decisions"]["node-a"]["approval"] == "expired"
    expired = hub.ok("GET", "/approvals?status=expired", space.admin_a)
    assert [e["node"] for e in expired] == ["node-a"]
    late = _act(space, space.admin_a, study["id"], "node-a", "approve")
    assert late.status_code == 409


def test_expiry_is_swept_when_a_node_polls(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space, nodes=("node-a",), approval_ttl_days=1)
    hub.clock.advance(days=1, seconds=1)
    assert hub.next_task(space.node_a) is None
    view = hub.ok("GET", f"/studies/{study['id']}", hub.operator)
    assert view["status"] == "rejected" and view["error"] == "node-a: approval expired"


def test_who_may_approve(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space)
    sid = study["id"]
    assert _act(space, space.admin_b, sid, "node-a", "approve").status_code == 403
    assert _act(space, space.alice, sid, "node-a", "approve").status_code == 403
    assert _act(space, space.auditor, sid, "node-a", "approve").status_code == 403
    assert _act(space, space.node_a, sid, "node-a", "approve").status_code == 403
    missing = _act(space, space.admin_a, sid, "node-b", "approve")
    assert missing.status_code == 404 and missing.json()["detail"]["field"] == "node"
    assert _act(space, space.admin_a, 999, "node-a", "approve").status_code == 404
    assert hub.ok("GET", "/approvals", space.auditor)[0]["study_id"] == sid
    for status in ("maybe", "not_required"):
        bad = hub.call("GET", f"/approvals?status={status}", space.admin_a)
        assert bad.status_code == 422 and bad.json()["detail"]["field"] == "query.status"
    assert _act(space, hub.operator, sid, "node-a", "approve").status_code == 200


def test_cancelled_studies_leave_no_pending_approvals(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space)
    hub.ok("POST", f"/studies/{study['id']}/cancel", space.alice)
    assert hub.ok("GET", "/approvals", space.admin_a) == []
    response = _act(space, space.admin_a, study["id"], "node-a", "approve")
    assert response.status_code == 409


def test_timeline_records_every_step_in_order(space: Space) -> None:
    hub = space.hub
    study = _awaiting(space, nodes=("node-a", "node-b"))
    hub.clock.advance(minutes=1)
    _act(space, space.admin_a, study["id"], "node-a", "approve")
    hub.clock.advance(minutes=1)
    _act(space, space.admin_b, study["id"], "node-b", "reject", comment="no")
    hub.clock.advance(minutes=1)
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.clock.advance(minutes=1)
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    timeline = hub.study(space.alice, study["id"])["timeline"]
    steps = [(e["at"][11:16], e["event"], e["node"]) for e in timeline]
    assert steps == [
        ("09:00", "submitted", None),
        ("09:00", "policy_checked", "node-a"),
        ("09:00", "policy_checked", "node-b"),
        ("09:00", "awaiting_approval", None),
        ("09:01", "approval", "node-a"),
        ("09:02", "rejection", "node-b"),
        ("09:02", "started", None),
        ("09:03", "task_started", "node-a"),
        ("09:04", "task_finished", "node-a"),
        ("09:04", "finished", None),
    ]
    assert timeline[1]["detail"]["outcome"] == "needs_approval"
    assert timeline[4]["detail"] == {"step": "steward", "by": "admin-a"}
    assert timeline[8]["detail"] == {"round": 1, "status": "completed"}
    assert timeline[9]["detail"] == {"status": "partial"}
