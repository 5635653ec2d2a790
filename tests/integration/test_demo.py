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
    # The audit commands a regulator would run on the left-behind files agree.
    for args in (["--hub-db", str(workdir / "hub.sqlite")],
                 ["--node-state", str(state), "--hub-db", str(workdir / "hub.sqlite")]):
        check = subprocess.run([sys.executable, "-m", "healthspace", "audit", "verify", *args],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
