"""Metering and settlement at the hub: meter records, statements, quota and accounts.

Every expected amount below is worked out by hand in the comments from the prices the
nodes publish and the meters they send, in cents, rounding each priced line half up.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hubkit import CC_PARTIAL, Headers, Hub, Space

from healthspace.core.canonical import canonical_json
from healthspace.core.envelope import seal

# node-a: research at half price, public health free
PRICES_A = {"per_study": 50, "per_person": 0.125, "per_compute_second": 0.0333,
            "per_epsilon": 20, "purpose_rates": {"public_health": 0, "research": 0.5}}
# node-b: research at full price (not listed), public health free, no ε price
PRICES_B = {"per_study": 10, "per_person": 0.013, "per_compute_second": 0.01,
            "purpose_rates": {"public_health": 0}}
DP_PARTIAL = {"min_cell_size": 10, "dp": True, "epsilon": 0.5, "breakdown": None,
              "count": 40, "half_width": 6, "noise_scales": [2.0]}
DONE = {"status": "completed", "partial": CC_PARTIAL}
FAILED = {"status": "failed", "error": "out of memory"}


# ---------------------------------------------------------------- helpers


def metered_envelope(hub: Hub, node: Headers, task: dict[str, Any], payload: dict[str, Any],
                     **meter: Any) -> dict[str, Any]:
    """A signed task.result envelope carrying ``payload`` and a meter that agrees with it
    (analysis, status and byte count), unless ``meter`` overrides those fields."""
    name = hub.names[node["Authorization"]]
    fields = {"analysis": task["analysis"], "status": payload["status"],
              "bytes": len(canonical_json(payload)), **meter}
    envelope = seal("task.result", payload, hub.keys[name], node_id=hub.nodes[name],
                    study_id=task["study_id"], round=task["round"], meter=fields,
                    clock=hub.clock)
    return envelope.model_dump(mode="json")


def post_metered(hub: Hub, node: Headers, task: dict[str, Any], payload: dict[str, Any],
                 **meter: Any) -> Any:
    """POST a metered result; returns the raw response."""
    return hub.call("POST", f"/node/tasks/{task['task_id']}/result", node,
                    json=metered_envelope(hub, node, task, payload, **meter))


def run(hub: Hub, node: Headers, payload: dict[str, Any] | None = None,
        **meter: Any) -> dict[str, Any]:
    """Take the node's next task and answer it with a metered result; returns the task."""
    task = hub.next_task(node)
    assert task is not None
    response = post_metered(hub, node, task, payload or DONE, **meter)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] is True
    return task


def price_nodes(space: Space, level_a: str = "L1", **extra_a: Any) -> None:
    """Publish version 2 of node-a's and node-b's policies, with their prices."""
    space.hub.publish_policy(space.node_a, {"level": level_a, "version": 2, "prices": PRICES_A,
                                            **extra_a})
    space.hub.publish_policy(space.node_b, {"level": "L1", "version": 2, "prices": PRICES_B})


def hand_cents(amount: str) -> int:
    """A currency amount written as a decimal string, in cents, half up (for the comments'
    arithmetic: never float)."""
    return int((Decimal(amount) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def statement(hub: Hub, who: Headers, query: str = "") -> dict[str, Any]:
    result: dict[str, Any] = hub.ok("GET", f"/billing/statement?period=2025-03{query}", who)
    return result


def study_count(hub: Hub) -> int:
    return len(hub.ok("GET", "/studies?limit=500", hub.operator)["studies"])


def audit_actions(hub: Hub, action: str) -> list[dict[str, Any]]:
    entries = hub.ok("GET", "/audit/entries?limit=1000", hub.operator)
    return [e for e in entries if e["action"] == action]


# ---------------------------------------------------------------- meter records


def test_a_posted_meter_is_stored_and_listed_with_its_exact_numbers(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"], title="bleeds")
    hub.clock.advance(seconds=90)
    task = run(hub, space.node_a, records_scanned=5000, persons=42, seconds=1.25)
    assert hub.study(space.alice, study["id"])["status"] == "completed"
    listed = hub.ok("GET", "/meter", space.alice)
    [record] = listed["records"]
    sent = len(canonical_json(DONE))
    assert record["meter"] == {"analysis": "cohort_count", "status": "completed",
                               "preview": False, "records_scanned": 5000, "persons": 42,
                               "persons_band": None, "seconds": 1.25, "bytes": sent,
                               "epsilon": 0.0}
    assert (record["study_id"], record["task_id"], record["round"]) == (
        study["id"], task["task_id"], 1)
    assert (record["node"], record["holder"], record["consumer"], record["consumer_org"],
            record["purpose"]) == ("node-a", "hosp-a", "alice", "pharma", "research")
    assert record["recorded_at"] == "2025-03-01T09:01:30Z"
    assert listed["totals"] == {"records_scanned": 5000.0, "persons": 42.0, "seconds": 1.25,
                                "bytes": float(sent), "epsilon": 0.0, "records": 1.0}
    [entry] = audit_actions(hub, "meter.record")  # the meter is on the ledger too
    assert entry["subject"] == f"study:{study['id']}/round:1/task:{task['task_id']}"


def test_a_result_without_a_meter_leaves_no_record_and_costs_nothing(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], **DONE)
    assert hub.study(space.alice, study["id"])["status"] == "completed"
    assert hub.ok("GET", "/meter", hub.operator)["records"] == []
    invoice = statement(hub, space.alice)
    assert invoice["lines"] == [] and invoice["totals"]["invoiced_cents"] == 0


def test_meter_totals_cover_every_match_and_the_filters_narrow_them(space: Space) -> None:
    hub = space.hub
    first = hub.submit(space.alice, nodes=["node-a", "node-b"])
    run(hub, space.node_a, records_scanned=100, persons=11, seconds=0.5, epsilon=0.25)
    run(hub, space.node_b, records_scanned=200, persons=22, seconds=1.5)
    second = hub.submit(space.alice, nodes=["node-b"])
    run(hub, space.node_b, FAILED, records_scanned=300, seconds=2.0)
    everything = hub.ok("GET", "/meter", hub.operator)
    done_bytes, failed_bytes = len(canonical_json(DONE)), len(canonical_json(FAILED))
    assert everything["totals"] == {
        "records_scanned": 600.0, "persons": 33.0, "seconds": 4.0,
        "bytes": float(2 * done_bytes + failed_bytes), "epsilon": 0.25, "records": 3.0}
    assert [r["meter"]["status"] for r in everything["records"]] == [
        "completed", "completed", "failed"]
    by_study = hub.ok("GET", f"/meter?study_id={second['id']}", hub.operator)
    assert [r["study_id"] for r in by_study["records"]] == [second["id"]]
    assert by_study["totals"]["records_scanned"] == 300.0
    by_node = hub.ok("GET", "/meter?node=node-b", hub.operator)
    assert {r["node"] for r in by_node["records"]} == {"node-b"}
    assert by_node["totals"]["records_scanned"] == 500.0 and by_node["totals"]["records"] == 2
    both = hub.ok("GET", f"/meter?node=node-a&study_id={first['id']}", hub.operator)
    assert both["totals"]["persons"] == 11.0
    paged = hub.ok("GET", "/meter?limit=1&offset=1", hub.operator)
    assert [r["node"] for r in paged["records"]] == ["node-b"]
    assert paged["totals"] == everything["totals"]  # totals are over every match, not the page
    assert hub.ok("GET", "/meter?period=2025-03", hub.operator)["totals"]["records"] == 3
    assert hub.ok("GET", "/meter?period=2025-02", hub.operator) == {
        "records": [], "totals": {"records_scanned": 0.0, "persons": 0.0, "seconds": 0.0,
                                  "bytes": 0.0, "epsilon": 0.0, "records": 0.0}}
    unknown = hub.call("GET", "/meter?node=node-z", hub.operator)
    assert unknown.status_code == 422 and unknown.json()["detail"]["field"] == "node"
    bad = hub.call("GET", "/meter?period=2025-3", hub.operator)
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "period"


def test_who_sees_which_meter_records(space: Space) -> None:
    hub = space.hub
    mine = hub.submit(space.alice, nodes=["node-a", "node-b"])
    run(hub, space.node_a, records_scanned=1)
    run(hub, space.node_b, records_scanned=2)
    bobs = hub.submit(space.bob, nodes=["node-b"])
    run(hub, space.node_b, records_scanned=4)

    def seen(who: Headers) -> list[tuple[int, str]]:
        listed = hub.ok("GET", "/meter", who)
        assert listed["totals"]["records"] == len(listed["records"])
        return [(r["study_id"], r["node"]) for r in listed["records"]]

    everything = [(mine["id"], "node-a"), (mine["id"], "node-b"), (bobs["id"], "node-b")]
    assert seen(space.alice) == everything[:2]  # her own study only, on any node
    assert seen(space.bob) == everything[2:]
    assert seen(space.admin_a) == everything[:1]  # hosp-a's node only, whoever asked
    assert seen(space.admin_b) == everything[1:]
    assert seen(space.auditor) == everything
    assert seen(hub.operator) == everything
    assert hub.ok("GET", "/meter", space.bob)["totals"]["records_scanned"] == 4.0
    assert hub.ok("GET", "/meter", space.admin_a)["totals"]["records_scanned"] == 1.0
    assert hub.call("GET", "/meter", space.node_a).status_code == 403  # nodes are no users


@pytest.mark.parametrize(("override", "field"), [
    ({"bytes": 1}, "meter.bytes"),
    ({"status": "failed"}, "meter.status"),
    ({"analysis": "summary"}, "meter.analysis"),
    ({"persons": -1}, "meter.persons"),
])
def test_a_meter_that_disagrees_with_its_result_is_refused_and_nothing_is_kept(
    space: Space, override: dict[str, Any], field: str,
) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    refused = post_metered(hub, space.node_a, task, DONE, records_scanned=10, **override)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"]["field"] == field
    assert hub.ok("GET", "/meter", hub.operator)["records"] == []
    still = hub.study(space.alice, study["id"])
    assert still["status"] == "running" and still["result"] is None
    assert [t["status"] for t in still["tasks"]] == ["running"]
    assert audit_actions(hub, "task.result") == [] and audit_actions(hub, "meter.record") == []
    accepted = post_metered(hub, space.node_a, task, DONE, records_scanned=10)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"task_id": task["task_id"], "accepted": True, "duplicate": False}
    assert hub.study(space.alice, study["id"])["status"] == "completed"
    [record] = hub.ok("GET", "/meter", hub.operator)["records"]
    assert record["meter"]["records_scanned"] == 10


def test_a_meter_bytes_count_is_of_the_payload_actually_sent(space: Space) -> None:
    hub = space.hub
    hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    bigger = {"status": "completed", "partial": {**CC_PARTIAL, "count": 4200}}
    stale = len(canonical_json(DONE))  # measured before the payload changed: 2 bytes short
    assert len(canonical_json(bigger)) == stale + 2
    response = post_metered(hub, space.node_a, task, bigger, bytes=stale)
    assert response.status_code == 422
    assert f"the meter counts {stale} bytes; the payload has {stale + 2}" in \
        response.json()["detail"]["message"]


# ---------------------------------------------------------------- settlement

# The research study of test_settlement…: a DP count (ε 0.5 per site) on both nodes.
# node-a, rate 0.5 — persons 40, 12.5 s, ε 0.5:
#   per_study          50 × 0.5                    = 25.00      → 2500
#   per_person         0.125 × 40 × 0.5            = 2.50       →  250
#   per_compute_second 0.0333 × 12.5 × 0.5         = 0.208125   →   21
#   per_epsilon        20 × 0.5 × 0.5              = 5.00       →  500
#   charge 3271; fee 10 % = 327.1 → 327; earned 2944
# node-b, rate 1 (research not listed) — persons 45, 6.2 s, ε 0.5 (no ε price):
#   per_study          10                          = 10.00      → 1000
#   per_person         0.013 × 45                  = 0.585      →   59 (half up)
#   per_compute_second 0.01 × 6.2                  = 0.062      →    6
#   charge 1065; fee 106.5 → 107 (half up); earned 958
# invoice 3271 + 1065 = 4336 = earned (2944 + 958 = 3902) + fee (327 + 107 = 434)
# points by persons: 100 × 40/85 = 47.0588, 100 × 45/85 = 52.9412
LINES_A = {"per_study": "25.00", "per_person": "2.50", "per_compute_second": "0.208125",
           "per_epsilon": "5.00"}
LINES_B = {"per_study": "10.00", "per_person": "0.585", "per_compute_second": "0.062"}


def _settled_dp_study(space: Space) -> dict[str, Any]:
    hub = space.hub
    price_nodes(space)
    study = hub.submit(space.alice, nodes=["node-a", "node-b"], title="dp bleeds",
                       params={"dp_epsilon": 0.5, "breakdown": False})
    assert study["status"] == "running"
    dp = {"status": "completed", "partial": DP_PARTIAL}
    run(hub, space.node_a, dp, records_scanned=5000, persons=40, seconds=12.5, epsilon=0.5)
    hub.clock.advance(minutes=10)
    run(hub, space.node_b, {"status": "completed", "partial": {**DP_PARTIAL, "count": 45}},
        records_scanned=3000, persons=45, seconds=6.2, epsilon=0.5)
    done = hub.study(space.alice, study["id"])
    assert done["status"] == "completed" and done["result"]["dp"] is True
    return done


def test_settlement_prices_each_node_at_its_own_prices_and_purpose_rate(space: Space) -> None:
    hub = space.hub
    study = _settled_dp_study(space)
    charge_a, charge_b = sum(hand_cents(v) for v in LINES_A.values()), \
        sum(hand_cents(v) for v in LINES_B.values())
    assert (charge_a, charge_b) == (3271, 1065)
    assert (hand_cents("3.271"), hand_cents("1.065")) == (327, 107)  # the fees, half up
    # the study shows it: estimate (50 + 0.125 × 1000 + 20 × 0.5) × .5 + 10 + 0.013 × 1000
    assert study["cost"] == {"estimate": 92.5 + 23.0, "invoiced": 43.36, "currency": "CNY",
                             "settled_at": "2025-03-01T09:10:00Z"}
    invoice = statement(hub, space.alice)
    assert (invoice["kind"], invoice["org"], invoice["period"], invoice["currency"],
            invoice["fee_rate"]) == ("invoice", "pharma", "2025-03", "CNY", 0.1)
    line_a, line_b = invoice["lines"]
    common = {"study_id": study["id"], "title": "dp bleeds",
              "settled_at": "2025-03-01T09:10:00Z", "consumer_org": "pharma",
              "purpose": "research", "epsilon": 0.5, "persons_band": None}
    assert line_a == {**common, "holder": "hosp-a", "node": "node-a", "persons": 40,
                      "compute_seconds": 12.5, "records_scanned": 5000, "points": 47.0588,
                      "rate": 0.5, "charge": 32.71, "platform_fee": 3.27, "earned": 29.44}
    assert line_b == {**common, "holder": "hosp-b", "node": "node-b", "persons": 45,
                      "compute_seconds": 6.2, "records_scanned": 3000, "points": 52.9412,
                      "rate": 1.0, "charge": 10.65, "platform_fee": 1.07, "earned": 9.58}
    totals = invoice["totals"]
    assert (totals["invoiced_cents"], totals["platform_fee_cents"], totals["earned_cents"]) \
        == (4336, 434, 3902)
    assert totals["invoiced_cents"] == totals["earned_cents"] + totals["platform_fee_cents"]
    assert (totals["invoiced"], totals["platform_fee"], totals["earned"]) == (43.36, 4.34,
                                                                             39.02)
    assert totals["balanced"] is True and totals["points"] == 100.0
    assert (totals["studies"], totals["lines"], totals["persons"]) == (1, 2, 85)
    assert "by_consumer" not in totals
    assert statement(hub, space.alice) == invoice  # a second read: the same statement
    assert statement(hub, space.bob) == invoice  # the organisation's invoice, not the user's

    earnings_a = statement(hub, space.admin_a)
    assert (earnings_a["kind"], earnings_a["org"]) == ("earnings", "hosp-a")
    assert earnings_a["lines"] == [line_a]
    assert (earnings_a["totals"]["invoiced_cents"], earnings_a["totals"]["platform_fee_cents"],
            earnings_a["totals"]["earned_cents"], earnings_a["totals"]["points"]) == (
        3271, 327, 2944, 47.0588)
    earnings_b = statement(hub, space.admin_b)
    assert earnings_b["lines"] == [line_b] and earnings_b["totals"]["earned_cents"] == 958

    platform = statement(hub, hub.operator)
    assert platform["kind"] == "platform" and platform["lines"] == [line_a, line_b]
    assert platform["totals"]["by_consumer"] == {"pharma": 43.36}
    assert platform["totals"]["by_holder"] == {"hosp-a": 29.44, "hosp-b": 9.58}
    assert platform["totals"]["invoiced_cents"] == 4336
    audited = statement(hub, space.auditor)  # regulator is an operator organisation
    assert audited["kind"] == "platform" and audited["lines"] == platform["lines"]
    assert statement(hub, hub.operator, "&org=hosp-a&kind=earnings") == earnings_a
    assert statement(hub, space.auditor, "&org=pharma") == invoice  # default kind: invoice

    [settled] = audit_actions(hub, "billing.settle")
    assert settled["subject"] == f"study:{study['id']}"
    assert hub.ok("GET", "/billing/statement?period=2025-04", space.alice)["lines"] == []


def test_a_zero_purpose_rate_settles_a_free_study(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    study = hub.submit(space.alice, nodes=["node-a", "node-b"], purpose="public_health")
    run(hub, space.node_a, persons=30, seconds=100, records_scanned=10)
    run(hub, space.node_b, persons=10, seconds=100, records_scanned=10)
    assert hub.study(space.alice, study["id"])["status"] == "completed"
    invoice = statement(hub, space.alice)
    assert [(ln["node"], ln["rate"], ln["charge"], ln["platform_fee"], ln["earned"],
             ln["points"]) for ln in invoice["lines"]] == [
        ("node-a", 0.0, 0.0, 0.0, 0.0, 75.0), ("node-b", 0.0, 0.0, 0.0, 0.0, 25.0)]
    assert invoice["totals"]["invoiced_cents"] == 0 and invoice["totals"]["points"] == 100.0


def test_a_partial_study_settles_only_the_nodes_that_completed(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    run(hub, space.node_a, persons=42, seconds=2, records_scanned=900)
    run(hub, space.node_b, FAILED, persons=0, seconds=30, records_scanned=700)
    assert hub.study(space.alice, study["id"])["status"] == "partial"
    # node-a, research, rate 0.5: 50 × .5 = 25.00; 0.125 × 42 × .5 = 2.625 → 2.63;
    # 0.0333 × 2 × .5 = 0.0333 → 0.03; total 27.66, fee 2.766 → 2.77, earned 24.89
    [line] = statement(hub, space.alice)["lines"]
    assert (line["node"], line["persons"], line["points"], line["charge"],
            line["platform_fee"], line["earned"]) == ("node-a", 42, 100.0, 27.66, 2.77, 24.89)
    assert statement(hub, space.admin_b)["lines"] == []  # node-b failed: it earns nothing


def test_a_failed_study_is_not_settled(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    hub.ok("PUT", "/billing/accounts/pharma", hub.operator, json={"deposit": 500})
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    account = hub.ok("GET", "/billing/accounts/pharma", space.alice)
    assert account["reserved"] == 110.5  # (50 + 0.125 × 1000) × .5 + 10 + 0.013 × 1000
    run(hub, space.node_a, FAILED, seconds=5, records_scanned=100)
    run(hub, space.node_b, FAILED, seconds=5, records_scanned=100)
    failed = hub.study(space.alice, study["id"])
    assert failed["status"] == "failed"
    assert failed["cost"] == {"estimate": 110.5, "invoiced": None, "currency": None,
                              "settled_at": None}
    assert len(hub.ok("GET", "/meter", space.alice)["records"]) == 2  # measured, not billed
    invoice = statement(hub, space.alice)
    assert invoice["lines"] == [] and invoice["totals"]["invoiced_cents"] == 0
    assert audit_actions(hub, "billing.settle") == []
    account = hub.ok("GET", "/billing/accounts/pharma", space.alice)
    assert (account["invoiced"], account["reserved"], account["available"]) == (0.0, 0.0,
                                                                               500.0)


def test_who_may_read_which_statement(space: Space) -> None:
    hub = space.hub
    _settled_dp_study(space)

    def status(who: Headers, query: str) -> tuple[int, str | None]:
        response = hub.call("GET", f"/billing/statement?{query}", who)
        detail = response.json().get("detail")
        return response.status_code, detail.get("field") if isinstance(detail, dict) else None

    assert status(space.admin_b, "period=2025-03&org=hosp-a") == (403, "org")
    assert status(space.admin_b, "period=2025-03&org=hosp-a&kind=earnings") == (403, "org")
    assert status(space.alice, "period=2025-03&kind=earnings") == (403, "kind")
    assert status(space.alice, "period=2025-03&kind=platform") == (403, "kind")
    assert status(space.alice, "period=2025-03&org=hosp-a") == (403, "org")
    assert status(space.admin_a, "period=2025-03&kind=invoice") == (403, "kind")
    assert status(space.admin_a, "period=2025-03&org=pharma") == (403, "org")
    assert status(space.auditor, "period=2025-03&org=hosp-a")[0] == 200
    assert status(hub.operator, "period=2025-03&org=nobody") == (422, "org")
    for period in ("2025-3", "2025-13", "2025-00", "march", "2025-03-01"):
        assert status(space.alice, f"period={period}") == (422, "period"), period
    assert hub.call("GET", "/billing/statement", space.alice).status_code == 422


# ---------------------------------------------------------------- quota and accounts

# Estimates (every person in the catalogue: 1000 per node; no ε):
#   node-a research: 50 × .5 = 25.00 + 0.125 × 1000 × .5 = 62.50 → 87.50
#   node-b research: 10 + 0.013 × 1000 = 13.00                    → 23.00
#   both nodes: 110.50
ESTIMATE_A, ESTIMATE_B = 8750, 2300


def _account(hub: Hub, who: Headers) -> dict[str, Any]:
    account: dict[str, Any] = hub.ok("GET", "/billing/accounts/pharma", who)
    return account


def test_a_study_beyond_the_quota_is_refused_with_the_figures(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    put = hub.ok("PUT", "/billing/accounts/pharma", hub.operator,
                 json={"deposit": 100, "credit_limit": 50})
    assert (put["prepaid"], put["credit_limit"], put["available"]) == (100.0, 50.0, 150.0)
    # 150.00 available: both nodes (110.50) pass
    first = hub.submit(space.alice, nodes=["node-a", "node-b"])
    assert first["status"] == "running"
    assert _account(hub, space.alice)["reserved"] == (ESTIMATE_A + ESTIMATE_B) / 100
    # 150.00 − 110.50 = 39.50 left: a second one (110.50) is refused, nothing of it kept
    before = study_count(hub)
    refused = hub.call("POST", "/studies", space.bob,
                       json={"analysis": "cohort_count", "cohort": first["cohort"],
                             "nodes": ["node-a", "node-b"]})
    assert refused.status_code == 402, refused.text
    detail = refused.json()["detail"]
    assert detail["field"] == "quota"
    assert detail["message"] == (
        "the study may cost up to CNY 110.50 but pharma has CNY 39.50 left (prepaid 100.00 "
        "+ credit limit 50.00 − invoiced 0.00 − reserved for running studies 110.50)")
    assert study_count(hub) == before
    assert hub.ok("GET", "/studies", hub.operator)["studies"][0]["id"] == first["id"]
    [quota] = audit_actions(hub, "billing.quota_refused")
    assert quota["subject"] == "consumer:bob"
    # a cheaper one (node-b only, 23.00) fits in the 39.50
    third = hub.submit(space.bob, nodes=["node-b"])
    assert third["status"] == "running" and study_count(hub) == before + 1
    account = _account(hub, space.bob)
    assert (account["reserved"], account["available"]) == (133.5, 16.5)
    # a public-health study is free: it is never refused
    free = hub.submit(space.alice, nodes=["node-a", "node-b"], purpose="public_health")
    assert free["status"] == "running" and _account(hub, space.alice)["reserved"] == 133.5

    # the first study settles on its measured usage, far below its estimate:
    # node-a: 25.00 + 0.125 × 40 × .5 = 2.50 → 27.50; node-b: 10 + 0.013 × 45 = 0.585 → 10.59
    assert run(hub, space.node_a, persons=40)["study_id"] == first["id"]
    assert run(hub, space.node_b, persons=45)["study_id"] == first["id"]
    assert hub.study(space.alice, first["id"])["status"] == "completed"
    assert statement(hub, space.alice)["totals"]["invoiced_cents"] == 2750 + 1059
    account = _account(hub, space.alice)
    # invoiced 38.09 replaces the 110.50 reserved; node-b's 23.00 is still reserved
    assert (account["invoiced"], account["reserved"], account["available"]) == (
        38.09, 23.0, 88.91)
    again = hub.call("POST", "/studies", space.alice,
                     json={"analysis": "cohort_count", "cohort": first["cohort"],
                           "nodes": ["node-a", "node-b"]})
    assert again.status_code == 402
    assert "has CNY 88.91 left (prepaid 100.00 + credit limit 50.00 − invoiced 38.09 − " \
           "reserved for running studies 23.00)" in again.json()["detail"]["message"]
    fits = hub.submit(space.alice, nodes=["node-a"])  # 87.50 ≤ 88.91
    assert fits["status"] == "running"
    assert _account(hub, space.alice)["available"] == 1.41


def test_a_study_needing_approval_is_reserved_a_denied_node_is_not(space: Space) -> None:
    hub = space.hub
    price_nodes(space, level_a="L2")
    hub.publish_policy(space.node_b, {"level": "L1", "version": 3, "prices": PRICES_B,
                                      "allowed_purposes": ["public_health"]})
    hub.ok("PUT", "/billing/accounts/pharma", hub.operator, json={"deposit": 1000})
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    assert study["status"] == "awaiting_approval"
    assert study["decisions"]["node-b"]["outcome"] == "deny"
    assert _account(hub, space.alice)["reserved"] == ESTIMATE_A / 100  # node-b takes no part


def test_accounts_are_set_by_the_operator_and_read_by_their_own_org(space: Space) -> None:
    hub = space.hub
    fresh = _account(hub, space.alice)
    assert (fresh["org"], fresh["currency"], fresh["prepaid"], fresh["credit_limit"],
            fresh["invoiced"], fresh["reserved"], fresh["available"], fresh["updated_at"]) == (
        "pharma", "CNY", 0.0, 0.0, 0.0, 0.0, 0.0, None)
    # without an account the organisation is not limited
    price_nodes(space)
    assert hub.submit(space.alice, nodes=["node-a", "node-b"])["status"] == "running"
    assert _account(hub, space.alice)["available"] == -110.5
    hub.clock.advance(hours=1)
    hub.ok("PUT", "/billing/accounts/pharma", hub.operator,
           json={"deposit": 100.005, "credit_limit": 20})
    updated = hub.ok("PUT", "/billing/accounts/pharma", hub.operator, json={"deposit": 25.5})
    # 100.005 → 100.01 (half up), + 25.50
    assert (updated["prepaid"], updated["credit_limit"]) == (125.51, 20.0)
    assert updated["updated_at"] == "2025-03-01T10:00:00Z"
    lowered = hub.ok("PUT", "/billing/accounts/pharma", hub.operator, json={"credit_limit": 0})
    assert (lowered["prepaid"], lowered["credit_limit"]) == (125.51, 0.0)
    assert _account(hub, space.bob) == lowered
    assert _account(hub, space.auditor) == lowered
    assert len(audit_actions(hub, "billing.account")) == 3
    for who in (space.admin_a, space.node_a):
        assert hub.call("GET", "/billing/accounts/pharma", who).status_code == 403
    assert hub.call("GET", "/billing/accounts/hosp-a", space.admin_a).status_code == 200
    for who in (space.alice, space.admin_a, space.auditor):
        response = hub.call("PUT", "/billing/accounts/pharma", who, json={"deposit": 1})
        assert response.status_code == 403
    assert hub.call("GET", "/billing/accounts/nobody", hub.operator).status_code == 404
    for body in ({"deposit": 0}, {"deposit": -5}, {"credit_limit": -1}, {"bonus": 1}):
        response = hub.call("PUT", "/billing/accounts/pharma", hub.operator, json=body)
        assert response.status_code == 422, body
    assert _account(hub, space.alice)["prepaid"] == 125.51


def test_earnings_and_fees_stay_balanced_over_many_odd_amounts(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "version": 2, "prices": {
        "per_study": 0.05, "per_person": 0.015, "per_compute_second": 0.0375}})
    # (persons, seconds) → per_study 5 + per_person + per_compute_second, in cents, half up:
    #   (1, 0.2):  1.5 → 2,  0.75 → 1:  8, fee 0.8 → 1
    #   (3, 1.0):  4.5 → 5,  3.75 → 4: 14, fee 1.4 → 1
    #   (7, 0.6): 10.5 → 11, 2.25 → 2: 18, fee 1.8 → 2
    #   (13, 2.2): 19.5 → 20, 8.25 → 8: 33, fee 3.3 → 3
    #   (21, 0.04): 31.5 → 32, 0.15 → 0: 37, fee 3.7 → 4
    # invoiced 110 = earned 99 + fee 11
    runs = [(1, 0.2), (3, 1.0), (7, 0.6), (13, 2.2), (21, 0.04)]
    for persons, seconds in runs:
        hub.submit(space.alice, nodes=["node-a"])
        run(hub, space.node_a, persons=persons, seconds=seconds)
    totals = statement(hub, space.alice)["totals"]
    assert (totals["invoiced_cents"], totals["platform_fee_cents"], totals["earned_cents"]) \
        == (110, 11, 99)
    charges = [hand_cents("0.05") + hand_cents(str(Decimal("0.015") * p))
               + hand_cents(str(Decimal("0.0375") * Decimal(str(s)))) for p, s in runs]
    assert charges == [8, 14, 18, 33, 37]
    assert [ln["charge"] for ln in statement(hub, space.alice)["lines"]] == [
        c / 100 for c in charges]
    assert totals["points"] == 500.0 and totals["studies"] == 5 and totals["balanced"] is True


def test_a_study_is_priced_as_its_nodes_priced_it_when_it_was_submitted(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    study = hub.submit(space.alice, nodes=["node-a"])
    hub.publish_policy(space.node_a, {"level": "L1", "version": 3,
                                      "prices": {**PRICES_A, "per_study": 1000}})
    run(hub, space.node_a, persons=40)
    # the prices of version 2: 25.00 + 0.125 × 40 × .5 = 2.50 → 27.50
    assert [(ln["study_id"], ln["charge"]) for ln in statement(hub, space.alice)["lines"]] == [
        (study["id"], 27.5)]
    hub.submit(space.alice, nodes=["node-a"])  # under version 3: 500.00 + 2.50
    run(hub, space.node_a, persons=40)
    assert [ln["charge"] for ln in statement(hub, space.alice)["lines"]] == [27.5, 502.5]


def test_a_preview_pays_the_preview_price_only(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L1", "version": 2,
                                      "prices": {**PRICES_A, "per_preview": 1.5}})
    hub.ok("PUT", "/billing/accounts/pharma", hub.operator, json={"deposit": 10})
    preview = hub.submit(space.alice, nodes=["node-a"], preview=True)
    assert preview["status"] == "running"
    assert _account(hub, space.alice)["reserved"] == 0.75  # 1.50 × research rate .5
    obfuscated = {"count": 45, "min_cell_size": 10, "breakdown": None, "obfuscated": True}
    run(hub, space.node_a, {"status": "completed", "partial": obfuscated}, preview=True,
        persons=45, seconds=3, records_scanned=1000)
    [line] = statement(hub, space.alice)["lines"]
    assert (line["charge"], line["platform_fee"], line["earned"]) == (0.75, 0.08, 0.67)
    assert _account(hub, space.alice) | {"updated_at": None} == {
        "org": "pharma", "currency": "CNY", "prepaid": 10.0, "credit_limit": 0.0,
        "invoiced": 0.75, "reserved": 0.0, "available": 9.25, "updated_at": None}


def test_a_dp_study_reserves_its_epsilon_price(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    hub.ok("PUT", "/billing/accounts/pharma", hub.operator, json={"deposit": 1000})
    hub.submit(space.alice, nodes=["node-a"], params={"dp_epsilon": 0.5, "breakdown": False})
    # (50 + 0.125 × 1000 + 20 × 0.5) × .5 = 25.00 + 62.50 + 5.00
    assert _account(hub, space.alice)["reserved"] == 92.5


def test_points_follow_persons_else_records_else_equal_shares(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    cases: list[tuple[dict[str, Any], dict[str, Any], tuple[float, float]]] = [
        ({"persons": 0, "persons_band": 10, "records_scanned": 300}, {"records_scanned": 100},
         (75.0, 25.0)),
        ({}, {}, (50.0, 50.0)),
        ({"persons": 1, "records_scanned": 1}, {"persons": 2, "records_scanned": 1000},
         (33.3333, 66.6667)),
    ]
    for a, b, expected in cases:
        study = hub.submit(space.alice, nodes=["node-a", "node-b"])
        run(hub, space.node_a, **a)
        run(hub, space.node_b, **b)
        lines = [ln for ln in statement(hub, hub.operator)["lines"]
                 if ln["study_id"] == study["id"]]
        assert tuple(ln["points"] for ln in lines) == expected
    first_a = statement(hub, space.admin_a)["lines"][0]
    assert (first_a["persons"], first_a["persons_band"]) == (0, 10)


def test_a_repeated_result_is_neither_metered_nor_billed_twice(space: Space) -> None:
    hub = space.hub
    price_nodes(space)
    hub.submit(space.alice, nodes=["node-a"])
    task = run(hub, space.node_a, persons=40)
    hub.clock.advance(minutes=1)
    again = post_metered(hub, space.node_a, task, DONE, persons=4000, seconds=999)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    [record] = hub.ok("GET", "/meter", hub.operator)["records"]
    assert record["meter"]["persons"] == 40
    assert statement(hub, space.alice)["totals"]["invoiced_cents"] == 2750
