"""The payer's checks through the real hub and node processes: the evidence check with the
hospitals, an insurer's claim check over the CLI, and hospital positions delivered only to
their own organisation and the payer."""

from __future__ import annotations

import contextlib
import csv
import json

import duckdb
import pytest

from healthspace.cdm.store import state_path
from healthspace.client.sdk import HubClient
from healthspace.core.errors import Conflict
from healthspace.node.state import NodeState
from healthspace.sim import simulate_dirs

from .conftest import HOSPITALS
from .helpers import cli

pytestmark = pytest.mark.xdist_group("federation")


def _token(live, user: str, org: str, kind: str, role: str = "consumer") -> str:
    live.fed.ensure_org(org, kind)
    with live.fed.operator() as op:
        with contextlib.suppress(Conflict):
            op.add_user(user, org, role)
        return op.issue_token(user).token


def test_evidence_check_through_the_hub_equals_the_simulation(live):
    analyst = _token(live, "bureau_analyst", "payer", "payer")
    nodes = ["payer", *HOSPITALS]
    with HubClient(live.url, analyst) as client:
        view = client.wait(client.submit({"analysis": "evidence_check", "nodes": nodes,
                                          "purpose": "payer_policy",
                                          "params": {"payer": "payer"}}).id, timeout=240)
    assert view.status.value == "completed", view.error
    reference = simulate_dirs("evidence_check", {n: live.data / n for n in nodes},
                              params={"payer": "payer"})
    assert view.result["hospitals"] == reference["hospitals"]
    assert view.result["claims_checked"] == reference["claims_checked"] > 0
    # the per-claim answers stay on the payer node, none on a hospital node
    kept = NodeState.open(state_path(live.fed.nodes["payer"].store)).findings(view.id)
    assert len(kept) >= view.result["claims_checked"]
    assert {row["finding"] for row in kept} <= {"supported", "unsupported", "no_record"}
    for name in HOSPITALS:
        assert NodeState.open(state_path(live.fed.nodes[name].store)).findings(view.id) == []
    assert "visit_id" not in json.dumps(view.result)


def _claims(live, tmp_path) -> tuple[str, dict[str, str]]:
    """An insurer's claims file from the payer's settled visits of one month: a third
    exact, a third with a raised amount, a third for a national id the payer never saw."""
    folder = live.data / "payer"
    rows = duckdb.connect().execute(f"""
        SELECT i.national_id, v.visit_start_date, c.condition_source_value, k.total_charge
        FROM read_csv_auto('{folder}/visit_occurrence.csv') v
        JOIN read_csv_auto('{folder}/identity.csv') i USING (person_id)
        JOIN read_csv_auto('{folder}/condition_occurrence.csv') c
          ON c.visit_occurrence_id = v.visit_occurrence_id
         AND c.condition_status_source_value = 'principal'
        JOIN read_csv_auto('{folder}/cost.csv') k ON k.cost_event_id = v.visit_occurrence_id
        WHERE v.visit_start_date BETWEEN DATE '2022-06-01' AND DATE '2022-06-30'
        QUALIFY count(*) OVER (PARTITION BY i.national_id, v.visit_start_date,
                               c.condition_source_value) = 1
        ORDER BY 1, 2 LIMIT 24""").fetchall()
    path = tmp_path / "claims.csv"
    expected = {}
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["claim_id", "national_id", "date", "diagnosis", "amount"])
        for i, (nid, day, dx, amount) in enumerate(rows):
            kind = ("match", "amount_mismatch", "no_match")[i % 3]
            amount = amount * 1.25 if kind == "amount_mismatch" else amount
            nid = "98" + nid[2:] if kind == "no_match" else nid
            writer.writerow([f"K{i}", nid, day.isoformat(), dx, f"{amount:.2f}"])
            expected[f"K{i}"] = kind
    return str(path), expected


def test_an_insurer_checks_claims_and_learns_only_the_outcomes(live, tmp_path):
    insurer = _token(live, "claims_desk", "ping_an_health", "consumer")
    path, expected = _claims(live, tmp_path)
    proc = cli(live, "claims", "check", "--file", path, "--node", "payer", "--json",
               token=insurer)
    doc = json.loads(proc.stdout)
    assert {row["claim_id"]: row["outcome"] for row in doc["claims"]} == expected
    with HubClient(live.url, insurer) as client:
        view = client.study(doc["study_id"])
        meters = client.meter(study_id=doc["study_id"]).records
    # the hub holds blinded points only, and the check is metered per claim
    stored = json.dumps({"params": view.params, "result": view.result})
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            assert row["national_id"] not in stored
    assert view.purpose == "commercial_insurance" and view.result["claims"] == len(expected)
    (meter,) = [m for m in meters if m.node == "payer"]
    assert meter.meter.persons >= len(expected) and meter.consumer_org == "ping_an_health"
    # the node recorded the run in its own ledger
    runs = NodeState.open(state_path(live.fed.nodes["payer"].store))
    assert any(r["study_id"] == doc["study_id"] for r in runs.runs())


def test_hospital_positions_reach_only_their_hospital_and_the_payer(live):
    analyst = _token(live, "bureau_analyst", "payer", "payer")
    admin = _token(live, "h1_admin", "hospital_1", "hospital", role="data_holder_admin")
    with HubClient(live.url, analyst) as client:
        payer_view = client.wait(client.submit({"analysis": "drg_weights", "nodes": HOSPITALS,
                                                "purpose": "payer_policy",
                                                "secure_aggregation": True}).id,
                                 timeout=240)
    with live.consumer() as client:
        pharma_view = client.wait(client.submit({"analysis": "drg_weights",
                                                 "nodes": HOSPITALS}).id, timeout=240)
    assert payer_view.status.value == pharma_view.status.value == "completed"
    assert set(payer_view.delivered) == set(HOSPITALS)
    assert pharma_view.delivered is None  # a pharma consumer gets the network result only
    for a, b in zip(pharma_view.result["groups"], payer_view.result["groups"], strict=True):
        assert a["drg"] == b["drg"] and a.get("cases") == b.get("cases")
    with HubClient(live.url, admin) as client:
        own = client.study(pharma_view.id)
    assert set(own.delivered) == {"hospital_1"}
    assert own.delivered["hospital_1"] == payer_view.delivered["hospital_1"]
    reference = simulate_dirs("drg_weights", {n: live.data / n for n in HOSPITALS})
    for name in HOSPITALS:
        ours, ref = payer_view.delivered[name], reference["delivered"][name]
        assert ours["cmi"] == pytest.approx(ref["cmi"], rel=1e-9)
        assert ours["cost_index"] == pytest.approx(ref["cost_index"], rel=1e-9)
