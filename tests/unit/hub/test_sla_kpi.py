"""Service levels and the KPI report, on the hub's controllable clock."""

from __future__ import annotations

from typing import Any

from hubkit import Headers, Hub, Space
from test_billing import DP_PARTIAL, FAILED, PRICES_A, PRICES_B, audit_actions, run

APPROVAL_SLA = {"level": "L2", "version": 2, "sla": {"approval_hours": 2}}
RESULT_SLA = {"level": "L1", "version": 2, "sla": {"result_minutes": 30}}


def breaches(hub: Hub, who: Headers | None = None, query: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = hub.ok("GET", f"/sla/breaches{query}", who or hub.operator)
    return found


def approve(hub: Hub, who: Headers, study_id: int, node: str = "node-a",
            verb: str = "approve") -> None:
    body = {"comment": "no"} if verb == "reject" else None
    response = hub.call("POST", f"/approvals/{study_id}/{node}/{verb}", who, json=body)
    assert response.status_code == 200, response.text


def sla_events(hub: Hub, study_id: int) -> list[dict[str, Any]]:
    timeline = hub.study(hub.operator, study_id)["timeline"]
    return [e for e in timeline if e["event"] == "sla_breach"]


# ---------------------------------------------------------------- service levels


def test_an_approval_pending_past_its_target_is_an_open_breach_closed_when_decided(
    space: Space,
) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, APPROVAL_SLA)
    study = hub.submit(space.alice, nodes=["node-a"], title="slow steward")
    assert study["status"] == "awaiting_approval"
    hub.clock.advance(hours=1, minutes=59)
    assert breaches(hub) == []  # within the 2 hours
    hub.clock.advance(hours=1, minutes=1)  # 3 h pending
    expected = {"study_id": study["id"], "title": "slow steward", "node": "node-a",
                "kind": "approval", "target_seconds": 7200.0, "actual_seconds": 10800.0,
                "open": True, "detected_at": "2025-03-01T12:00:00Z"}
    assert breaches(hub) == [expected]
    hub.clock.advance(minutes=30)
    assert breaches(hub, space.auditor) == [expected]  # found once, not again
    [event] = sla_events(hub, study["id"])
    assert (event["at"], event["node"]) == ("2025-03-01T12:00:00Z", "node-a")
    assert event["detail"] == {"kind": "approval", "target_seconds": 7200.0,
                               "actual_seconds": 10800.0, "open": True}
    hub.clock.advance(hours=1, minutes=30)  # decided 5 h after submission
    approve(hub, space.admin_a, study["id"])
    assert breaches(hub) == [{**expected, "actual_seconds": 18000.0, "open": False}]
    assert len(sla_events(hub, study["id"])) == 1 and len(breaches(hub)) == 1
    [entry] = audit_actions(hub, "study.sla_breach")
    assert entry["subject"] == f"study:{study['id']}/node:node-a"


def test_a_decision_within_the_target_is_no_breach_a_late_one_is_even_unseen(
    space: Space,
) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, APPROVAL_SLA)
    quick = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(hours=1, minutes=59)
    approve(hub, space.admin_a, quick["id"])
    hub.clock.advance(hours=5)
    assert breaches(hub) == [] and sla_events(hub, quick["id"]) == []
    # decided late with no read in between: found afterwards, already closed
    late = hub.submit(space.alice, nodes=["node-a"])
    rejected = hub.submit(space.bob, nodes=["node-a"])
    hub.clock.advance(hours=4)
    approve(hub, space.admin_a, late["id"])
    hub.clock.advance(minutes=30)
    approve(hub, space.admin_a, rejected["id"], verb="reject")
    hub.clock.advance(hours=1)
    assert [(b["study_id"], b["kind"], b["actual_seconds"], b["open"], b["detected_at"])
            for b in breaches(hub)] == [
        (late["id"], "approval", 14400.0, False, "2025-03-01T21:29:00Z"),
        (rejected["id"], "approval", 16200.0, False, "2025-03-01T21:29:00Z")]
    assert hub.study(space.bob, rejected["id"])["status"] == "rejected"
    assert sla_events(hub, rejected["id"])[0]["detail"]["open"] is False


def test_an_automatically_approved_study_has_no_approval_target(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "version": 2,
                                      "sla": {"approval_hours": 1}})
    study = hub.submit(space.alice, nodes=["node-a"])
    assert study["status"] == "running"
    hub.clock.advance(hours=3)
    assert breaches(hub) == []


def test_a_result_later_than_its_target_is_a_breach_open_while_running(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, RESULT_SLA)
    slow = hub.submit(space.alice, nodes=["node-a"])  # L1: started at once, 09:00
    hub.clock.advance(minutes=29)
    assert breaches(hub) == []
    hub.clock.advance(minutes=16)  # 45 min running
    expected = {"study_id": slow["id"], "title": None, "node": "node-a", "kind": "result",
                "target_seconds": 1800.0, "actual_seconds": 2700.0, "open": True,
                "detected_at": "2025-03-01T09:45:00Z"}
    assert breaches(hub) == [expected]
    hub.clock.advance(minutes=5)
    run(hub, space.node_a)  # the result 50 min after the start
    assert hub.study(space.alice, slow["id"])["status"] == "completed"
    assert breaches(hub) == [{**expected, "actual_seconds": 3000.0, "open": False}]
    assert [e["detail"]["kind"] for e in sla_events(hub, slow["id"])] == ["result"]
    # a study answered within the target, and a failed one answered late
    fast = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(minutes=10)
    run(hub, space.node_a)
    failed = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(minutes=31)
    run(hub, space.node_a, FAILED)
    assert hub.study(space.alice, failed["id"])["status"] == "failed"
    found = breaches(hub)
    assert [(b["study_id"], b["actual_seconds"], b["open"]) for b in found] == [
        (slow["id"], 3000.0, False), (failed["id"], 1860.0, False)]
    assert sla_events(hub, fast["id"]) == []


def test_the_result_clock_starts_at_the_last_approval(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {**RESULT_SLA, "level": "L2"})
    study = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(hours=6)  # waiting for approval is not waiting for the result
    assert breaches(hub) == []
    approve(hub, space.admin_a, study["id"])
    hub.clock.advance(minutes=25)
    run(hub, space.node_a)
    assert breaches(hub) == []
    late = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(hours=1)
    approve(hub, space.admin_a, late["id"])
    hub.clock.advance(minutes=40)
    [breach] = breaches(hub)
    assert (breach["study_id"], breach["actual_seconds"], breach["open"]) == (late["id"],
                                                                              2400.0, True)


def test_targets_are_those_of_the_policy_the_study_was_admitted_under(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, APPROVAL_SLA)
    study = hub.submit(space.alice, nodes=["node-a"])
    hub.publish_policy(space.node_a, {**APPROVAL_SLA, "version": 3,
                                      "sla": {"approval_hours": 100}})
    hub.clock.advance(hours=3)
    [breach] = breaches(hub)
    assert (breach["study_id"], breach["target_seconds"]) == (study["id"], 7200.0)
    later = hub.submit(space.alice, nodes=["node-a"])  # under version 3: 100 h
    hub.clock.advance(hours=3)
    assert [b["study_id"] for b in breaches(hub)] == [study["id"]]
    assert later["decisions"]["node-a"]["policy_version"] == 3


def test_breaches_are_for_operators_and_auditors_and_filter_by_month(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, APPROVAL_SLA)
    hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(hours=3)
    assert len(breaches(hub, query="?period=2025-03")) == 1
    assert breaches(hub, query="?period=2025-04") == []
    for who in (space.alice, space.admin_a, space.node_a):
        assert hub.call("GET", "/sla/breaches", who).status_code == 403
    bad = hub.call("GET", "/sla/breaches?period=2025-3", hub.operator)
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "period"


# ---------------------------------------------------------------- KPIs


def _kpi(hub: Hub, period: str, who: Headers | None = None) -> dict[str, Any]:
    report: dict[str, Any] = hub.ok("GET", f"/kpi?period={period}", who or hub.operator)
    return report


def _march(space: Space) -> dict[str, int]:
    """A month of studies; returns their ids.

    * dp — research, node-a (L2, approval_hours 2: approved after 3 h) and node-b; a DP count
      (ε 0.5 each); the result 20 min after approval. Invoice 43.36 (worked out in
      test_billing: node-a 32.71, node-b 10.65; earned 29.44 and 9.58).
    * health — public health by carol (biotech), node-b, free; the result after 10 min.
    * failed — node-b fails (records scanned: 700, not used). refused — node-b refuses.
    * denied — a purpose node-b does not allow.
    """
    hub = space.hub
    hub.org("biotech", "consumer")
    carol = hub.user("carol", "biotech", "consumer")
    hub.publish_policy(space.node_a, {"level": "L2", "version": 2, "prices": PRICES_A,
                                      "sla": {"approval_hours": 2}})
    hub.publish_policy(space.node_b, {"level": "L1", "version": 2, "prices": PRICES_B})
    dp = hub.submit(space.alice, nodes=["node-a", "node-b"],
                    params={"dp_epsilon": 0.5, "breakdown": False})
    hub.clock.advance(hours=3)
    approve(hub, space.admin_a, dp["id"])  # 12:00
    hub.clock.advance(minutes=20)
    run(hub, space.node_a, {"status": "completed", "partial": DP_PARTIAL},
        records_scanned=5000, persons=40, seconds=12.5, epsilon=0.5)
    run(hub, space.node_b, {"status": "completed", "partial": {**DP_PARTIAL, "count": 45}},
        records_scanned=3000, persons=45, seconds=6.2, epsilon=0.5)
    assert hub.study(space.alice, dp["id"])["status"] == "completed"
    health = hub.submit(carol, nodes=["node-b"], purpose="public_health")
    hub.clock.advance(minutes=10)
    run(hub, space.node_b, records_scanned=1000, persons=10, seconds=1)
    failed = hub.submit(space.bob, nodes=["node-b"])
    run(hub, space.node_b, FAILED, records_scanned=700, seconds=3)
    refused = hub.submit(space.bob, nodes=["node-b"])
    run(hub, space.node_b, {"status": "refused", "error": "daily limit"})
    denied = hub.submit(space.alice, nodes=["node-b"], purpose="commercial_insurance")
    assert denied["status"] == "rejected"
    return {"dp": dp["id"], "health": health["id"], "failed": failed["id"],
            "refused": refused["id"], "denied": denied["id"]}


def test_the_kpi_report_of_a_month(space: Space) -> None:
    hub = space.hub
    _march(space)
    invoice = hub.ok("GET", "/billing/statement?period=2025-03&org=pharma", hub.operator)
    assert invoice["totals"]["invoiced"] == 43.36
    report = _kpi(hub, "2025-03")
    assert (report["period"], report["currency"]) == ("2025-03", "CNY")
    assert set(report) == {"period", "currency", "cost", "efficiency", "value", "safety"}
    # cost: 43.36 over 5000 + 3000 + 1000 records (the failed task's 700 not used)
    assert report["cost"] == {
        "total_cost": 43.36, "records_used": 9000, "persons_contributing": 95,
        "unit_cost_per_1000_records": round(43.36 / 9, 4),  # 4.8178
        "cost_per_person": round(43.36 / 95, 4),  # 0.4564
        "previous": {"period": "2025-02", "total_cost": 0.0,
                     "unit_cost_per_1000_records": None},
        "trend_pct": {"total_cost": None, "unit_cost_per_1000_records": None}}
    assert report["cost"]["unit_cost_per_1000_records"] == 4.8178
    # efficiency: node-a decided 3 h after submission (node-b needed no approval);
    # results 20 and 10 min after their start; 2 completed of 4 ended
    assert report["efficiency"] == {
        "studies": 5,
        "by_status": {"completed": 2, "failed": 2, "rejected": 1},
        "approval_turnaround_hours": {"p50": 3.0, "p95": 3.0, "n": 1},
        "time_to_result_minutes": {"p50": 15.0, "p95": 19.5, "n": 2},
        "success_rate": 0.5}
    assert report["value"] == {
        "studies_completed": 2, "completed_by_purpose": {"public_health": 1, "research": 1},
        "models_deployed": 0, "consumers_served": 2, "data_holders_credited": 2,
        "earned_by_holder": {"hosp-a": 29.44, "hosp-b": 9.58}}
    safety = report["safety"]
    assert safety["denials_by_reason"] == {"purpose_not_allowed": 1}
    assert safety["node_refusals"] == 1  # node-b's signed refusal; the denial is not one
    assert safety["dp_epsilon_spent"] == 1.0
    assert safety["dp_epsilon_by_consumer"] == {"pharma": 1.0}
    assert safety["sla_breaches_by_kind"] == {"approval": 1}
    assert safety["incidents"] == {"sla_breaches": 1, "failed_tasks": 1, "secure_reruns": 0,
                                   "total": 2}
    ledger = safety["ledger"]
    assert ledger["ok"] is True and ledger["problem"] is None
    assert ledger["entries"] == len(hub.ok("GET", "/audit/entries?limit=1000", hub.operator))
    assert _kpi(hub, "2025-03", space.auditor) == _kpi(hub, "2025-03")  # a repeat: the same
    [breach] = breaches(hub)
    assert (breach["kind"], breach["actual_seconds"], breach["open"]) == ("approval",
                                                                          10800.0, False)


def test_the_next_month_trends_against_the_previous(space: Space) -> None:
    hub = space.hub
    _march(space)
    hub.clock.advance(days=31)  # 2025-04-01 12:30
    study = hub.submit(space.alice, nodes=["node-b"])
    run(hub, space.node_b, records_scanned=3000, persons=45)
    assert hub.study(space.alice, study["id"])["status"] == "completed"
    # node-b, research: 10 + 0.013 × 45 = 0.585 → 10.59, over 3000 records: 3.53 per 1000
    april = _kpi(hub, "2025-04")
    cost = april["cost"]
    assert (cost["total_cost"], cost["records_used"], cost["unit_cost_per_1000_records"]) == (
        10.59, 3000, 3.53)
    assert cost["previous"] == {"period": "2025-03", "total_cost": 43.36,
                                "unit_cost_per_1000_records": 4.8178}
    # (10.59 − 43.36) / 43.36 = −75.58 %; (3.53 − 4.8178) / 4.8178 = −26.73 %
    assert cost["trend_pct"] == {"total_cost": -75.58, "unit_cost_per_1000_records": -26.73}
    assert april["efficiency"]["studies"] == 1 and april["efficiency"]["success_rate"] == 1.0
    assert april["value"]["earned_by_holder"] == {"hosp-b": 9.53}  # 10.59 − fee 1.059 → 1.06
    assert april["safety"]["dp_epsilon_spent"] == 0.0
    # March's approval breach is first seen now, in April, but it is March's incident
    [breach] = breaches(hub, query="?period=2025-04")
    assert breach["detected_at"] == "2025-04-01T12:30:00Z"
    assert april["safety"]["incidents"]["total"] == 0
    march = _kpi(hub, "2025-03")
    assert march["cost"]["total_cost"] == 43.36
    assert march["safety"]["incidents"] == {"sla_breaches": 1, "failed_tasks": 1,
                                            "secure_reruns": 0, "total": 2}


def test_an_empty_month_has_no_ratios(space: Space) -> None:
    report = _kpi(space.hub, "2025-01")
    assert report["cost"]["total_cost"] == 0.0 and report["cost"]["records_used"] == 0
    assert report["cost"]["unit_cost_per_1000_records"] is None
    assert report["cost"]["cost_per_person"] is None
    assert report["cost"]["previous"]["period"] == "2024-12"
    efficiency = report["efficiency"]
    assert (efficiency["studies"], efficiency["success_rate"]) == (0, None)
    assert efficiency["approval_turnaround_hours"] == {"p50": None, "p95": None, "n": 0}
    assert report["value"]["studies_completed"] == 0 and report["value"]["consumers_served"] == 0
    assert report["safety"]["incidents"]["total"] == 0 and report["safety"]["ledger"]["ok"]


def test_kpis_are_for_operators_and_auditors_with_a_valid_month(space: Space) -> None:
    hub = space.hub
    for who in (space.alice, space.admin_a, space.node_a):
        assert hub.call("GET", "/kpi?period=2025-03", who).status_code == 403
    for period in ("2025-3", "2025-13", "25-03", "2025-03-01"):
        response = hub.call("GET", f"/kpi?period={period}", hub.operator)
        assert response.status_code == 422 and response.json()["detail"]["field"] == "period"
    assert hub.call("GET", "/kpi", hub.operator).status_code == 422
    assert hub.call("GET", "/kpi?period=2025-03", space.auditor).status_code == 200


def test_a_kpi_read_records_breaches_it_finds(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, APPROVAL_SLA)
    study = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(hours=3)
    assert _kpi(hub, "2025-03")["safety"]["incidents"]["sla_breaches"] == 1
    assert [e["detail"]["open"] for e in sla_events(hub, study["id"])] == [True]


def test_a_breach_open_when_the_study_is_cancelled_is_closed_at_the_cancellation(
    space: Space,
) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L2", "version": 2,
                                      "sla": {"approval_hours": 2, "result_minutes": 30}})
    pending = hub.submit(space.alice, nodes=["node-a"])
    hub.clock.advance(hours=3)
    assert [b["open"] for b in breaches(hub)] == [True]
    hub.clock.advance(hours=1)
    hub.ok("POST", f"/studies/{pending['id']}/cancel", space.alice)
    [closed] = breaches(hub)
    assert (closed["kind"], closed["actual_seconds"], closed["open"]) == ("approval", 14400.0,
                                                                          False)
    running = hub.submit(space.alice, nodes=["node-a"])
    approve(hub, space.admin_a, running["id"])
    hub.clock.advance(minutes=45)
    assert [(b["kind"], b["open"]) for b in breaches(hub)][1:] == [("result", True)]
    hub.clock.advance(minutes=15)
    hub.ok("POST", f"/studies/{running['id']}/cancel", space.alice)
    hub.clock.advance(hours=1)
    assert [(b["study_id"], b["kind"], b["actual_seconds"], b["open"])
            for b in breaches(hub)][1:] == [(running["id"], "result", 3600.0, False)]
