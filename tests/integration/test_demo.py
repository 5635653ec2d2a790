"""The main job, as a user runs it: ``healthspace demo --json`` in a fresh work folder."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_demo_json_total_equals_pooled_sql(tmp_path):
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "healthspace", "demo", "--persons", "3000", "--workdir",
         str(workdir), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # exactly one JSON document on stdout
    (study,) = doc["studies"]
    assert study["analysis"] == "cohort_count" and study["status"] == "completed"
    assert set(study["result"]["sites"]) == {"hospital_1", "hospital_2", "hospital_3"}
    assert study["result"]["total"] == doc["checks"]["pooled_sql_count"] > 0
    assert (workdir / "hub.sqlite").exists() and (workdir / "logs" / "hub.log").exists()
    assert (workdir / "nodes" / "payer.duckdb").exists()
    state = workdir / "nodes" / "hospital_1.state.sqlite"
    assert state.exists()
    # Governance ran: approvals were needed, consent reduced the count, every ledger verifies.
    assert doc["audit"]["ok"] is True
    assert all(n["discrepancies"] == 0 for n in doc["audit"]["nodes"].values())
    assert doc["audit"]["nodes"]["hospital_1"]["entries"] >= 3
    # Every task was metered, the study settled, money in = money out + the platform fee.
    meters = doc["meter"]["records"]
    assert sorted(m["node"] for m in meters) == sorted(study["nodes"])
    assert all(m["meter"]["records_scanned"] > 0 and m["meter"]["bytes"] > 0 for m in meters)
    settlement = doc["settlement"]
    assert settlement["invoiced_total"] > 0 and settlement["balanced"] is True
    assert round(settlement["earned_total"] + settlement["platform_fee"], 2) == \
        settlement["invoiced_total"]
    # 10 % of each holder's charge, each rounded half up to the cent.
    assert abs(settlement["platform_fee"] - 0.1 * settlement["invoiced_total"]) <= 3 * 0.005
    assert set(settlement["by_holder"]) == {"hospital_1", "hospital_2", "hospital_3"}
    # hospital_1 (L3) withholds its count under secure aggregation: its persons are banded.
    h1 = next(m["meter"] for m in meters if m["node"] == "hospital_1")
    assert h1["persons_band"] == 100 and h1["persons"] % 100 == 0
    account = settlement["account"]
    assert account["invoiced"] == settlement["invoiced_total"]
    assert account["available"] == round(account["prepaid"] + account["credit_limit"]
                                         - account["invoiced"] - account["reserved"], 2)
    kpi = doc["kpi"]
    assert set(kpi) >= {"cost", "efficiency", "value", "safety"}
    assert kpi["cost"]["total_cost"] == settlement["invoiced_total"]
    assert kpi["cost"]["records_used"] == sum(m["meter"]["records_scanned"] for m in meters)
    assert kpi["efficiency"]["success_rate"] == 1.0
    assert kpi["value"]["completed_by_purpose"] == {"drug_development": 1}
    assert kpi["safety"]["ledger"]["ok"] is True
    # The audit commands a regulator would run on the left-behind files agree.
    for args in (["--hub-db", str(workdir / "hub.sqlite")],
                 ["--node-state", str(state), "--hub-db", str(workdir / "hub.sqlite")]):
        check = subprocess.run([sys.executable, "-m", "healthspace", "audit", "verify", *args],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr


def test_payer_demo_scores_the_injected_fraud(tmp_path):
    """``demo --scenario payer``: every study completes through the hub, the insurer's
    outcomes equal its truth file and the payer's kept findings meet the detection targets."""
    workdir = tmp_path / "payer-demo"
    proc = subprocess.run(
        [sys.executable, "-m", "healthspace", "demo", "--scenario", "payer", "--persons",
         "3000", "--workdir", str(workdir), "--json"],
        capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert set(doc["studies"]) == {"casemix", "drg_weights", "fraud_screen", "evidence_check",
                                   "claim_check"}
    assert all(s["status"] == "completed" for s in doc["studies"].values())
    assert set(doc["studies"]["drg_weights"]["delivered"]) == {"hospital_1", "hospital_2",
                                                               "hospital_3"}
    assert set(doc["delivered_to_hospital"]) == {"hospital_1"}
    claims = doc["claims"]
    assert claims["agree"] is True and claims["checked"] > 0
    for pattern in ("split_admission", "duplicate_billing", "unsupported_severity"):
        found = doc["detection"][pattern]
        assert found["true_positives"] > 0, pattern
        assert found["recall"] >= 0.9 and found["precision"] >= 0.8, (pattern, found)
    assert "hospital_3" in doc["detection"]["upcoding"]["ranking"][:2]
