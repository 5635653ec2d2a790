"""Governance end to end: approvals, node re-check, consent and ledgers with real processes."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.demo_data import showcase_cohort

from .helpers import cli
from .reference import released, t2d_feasibility

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]




def submit(live, tmp_path, purpose="drug_development", nodes=("strict_site",)):
    study = tmp_path / f"study-{time.monotonic_ns()}.json"
    study.write_text(json.dumps({"analysis": "cohort_count", "purpose": purpose,
                                 "cohort": showcase_cohort(), "nodes": list(nodes)}))
    return json.loads(cli(live, "study", "submit", str(study), "--json").stdout)


def backup(src, dst):
    """A consistent copy of a live SQLite (WAL) database."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def wait_status(live, study_id, timeout=60):
    with live.consumer() as c:
        return c.wait(study_id, timeout=timeout)


def test_two_level_approval_through_the_cli(live, tmp_path):
    view = submit(live, tmp_path)
    assert view["status"] == StudyStatus.AWAITING_APPROVAL
    pending = json.loads(cli(live, "approvals", "list", "--json",
                             token=live.steward_token).stdout)
    assert any(p["study_id"] == view["id"] and p["node"] == "strict_site" for p in pending)
    early = cli(live, "approvals", "approve", str(view["id"]), "strict_site", "--step",
                "ethics", "--ethics-ref", "IRB-1", token=live.steward_token, check=False)
    assert early.returncode == 2 and "steward" in early.stderr  # steward first
    cli(live, "approvals", "approve", str(view["id"]), "strict_site", "--step", "steward",
        "--comment", "data steward ok", token=live.steward_token)
    # Ethics needs its reference: a user mistake, exit 2, nothing recorded.
    bad = cli(live, "approvals", "approve", str(view["id"]), "strict_site", "--step", "ethics",
              token=live.steward_token, check=False)
    assert bad.returncode == 2 and "ethics_ref" in bad.stderr
    with live.consumer() as c:
        assert c.study(view["id"]).status == StudyStatus.AWAITING_APPROVAL
    cli(live, "approvals", "approve", str(view["id"]), "strict_site", "--step", "ethics",
        "--ethics-ref", "IRB-2026-042", token=live.steward_token)
    final = wait_status(live, view["id"])
    assert final.status == StudyStatus.COMPLETED
    expected = t2d_feasibility(live.data / "hospital_3")
    assert final.result["sites"] == {"strict_site": released(expected, 11)}
    assert final.result["min_cell_size"] == {"strict_site": 11}
    events = [e.event for e in final.timeline]
    assert events.index("submitted") < events.index("started") < events.index("finished")


def test_rejection_reaches_the_consumer(live, tmp_path):
    view = submit(live, tmp_path)
    cli(live, "approvals", "reject", str(view["id"]), "strict_site", "--comment",
        "cohort too narrow for this purpose", token=live.steward_token)
    final = wait_status(live, view["id"])
    assert final.status == StudyStatus.REJECTED
    assert "cohort too narrow" in (final.error or "")
    proc = cli(live, "study", "results", str(view["id"]), "--json", check=False)
    assert proc.returncode == 3


def test_policy_denial_is_visible_before_submitting(live, tmp_path):
    study = tmp_path / "insurer.json"
    study.write_text(json.dumps({"analysis": "cohort_count", "purpose": "commercial_insurance",
                                 "cohort": showcase_cohort(), "nodes": ["strict_site"]}))
    proc = cli(live, "study", "check", str(study), "--json")
    decisions = json.loads(proc.stdout)["nodes"]
    assert decisions["strict_site"]["outcome"] == "deny"
    assert "purpose_not_allowed" in {r["code"] for r in decisions["strict_site"]["reasons"]}


def test_node_refuses_when_its_policy_changed_after_the_hub_copy(live, tmp_path):
    """The hub pre-checks against the published copy; the node's own policy decides."""
    node = live.fed.nodes["hospital_2"]
    policy = tmp_path / "no-pharma.yaml"
    policy.write_text("level: L2\napproval_mode: auto\nallowed_purposes: [research]\n")
    cli(live, "node", "policy", "set", str(policy), "--store", str(node.store))
    try:
        with live.consumer() as c:
            view = c.wait(c.submit({"analysis": "cohort_count", "purpose": "drug_development",
                                    "cohort": showcase_cohort(),
                                    "nodes": ["hospital_1", "hospital_2"]}).id, timeout=60)
        statuses = {t.node: t for t in view.tasks}
        if statuses["hospital_2"].status == TaskStatus.REFUSED and view.status == "partial":
            assert "drug_development" in statuses["hospital_2"].error
        else:  # the agent had already republished: then the hub itself refuses it up front
            assert statuses["hospital_2"].status == TaskStatus.REFUSED
    finally:
        restore = tmp_path / "restore.json"
        from .conftest import OPEN_POLICY

        restore.write_text(json.dumps(OPEN_POLICY))
        cli(live, "node", "policy", "set", str(restore), "--store", str(node.store))


def test_consent_withdrawal_changes_the_next_count_exactly(live, tmp_path):
    node = live.fed.nodes["hospital_1"]
    cohort = showcase_cohort()
    with live.consumer() as c:
        before = c.wait(c.submit({"analysis": "cohort_count", "cohort": cohort,
                                  "nodes": ["hospital_1"]}).id, timeout=60)
    import duckdb

    from healthspace.cohort.compiler import compile_cohort
    from healthspace.cohort.models import load_cohort

    q = compile_cohort(load_cohort(cohort))
    con = duckdb.connect(str(node.store), read_only=True)
    people = con.execute(f"SELECT p.person_source_value FROM ({q.sql}) c JOIN person p "
                         "USING (person_id) ORDER BY 1 LIMIT 13", q.params).fetchall()
    con.close()
    consent = tmp_path / "consent.csv"
    consent.write_text("person_source_value,tier\n" +
                       "".join(f"{psv},withheld\n" for (psv,) in people))
    cli(live, "node", "consent", "import", str(consent), "--store", str(node.store))
    try:
        with live.consumer() as c:
            after = c.wait(c.submit({"analysis": "cohort_count", "cohort": cohort,
                                     "nodes": ["hospital_1"]}).id, timeout=60)
        assert after.result["sites"]["hospital_1"] == before.result["sites"]["hospital_1"] - 13
    finally:
        consent.write_text("person_source_value,tier\n" +
                           "".join(f"{psv},open\n" for (psv,) in people))
        cli(live, "node", "consent", "import", str(consent), "--store", str(node.store))


def test_ledgers_verify_crosscheck_and_detect_tampering(live, tmp_path):
    db = live.fed.workdir / "hub.sqlite"
    hub_url = f"sqlite:///{db}"
    node = live.fed.nodes["hospital_1"]
    state = node.store.with_suffix(".state.sqlite")
    assert cli(live, "audit", "verify", "--hub-db", hub_url).returncode == 0
    assert cli(live, "audit", "verify", "--node-state", str(state)).returncode == 0
    cross = cli(live, "audit", "crosscheck", "--hub-db", hub_url, "--node-state", str(state),
                "--node-name", "hospital_1", "--json", check=False)
    assert cross.returncode == 0, cross.stdout + cross.stderr
    copy = backup(db, tmp_path / "hub-copy.sqlite")
    with sqlite3.connect(copy) as dst:
        dst.execute("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 3")
    tampered = cli(live, "audit", "verify", "--hub-db", f"sqlite:///{copy}", check=False)
    assert tampered.returncode != 0 and "3" in tampered.stdout + tampered.stderr
    node_copy = backup(state, tmp_path / "node-copy.sqlite")
    with sqlite3.connect(node_copy) as con:
        con.execute("DELETE FROM ledger_entries WHERE seq = 2")
    assert cli(live, "audit", "verify", "--node-state", str(node_copy),
               check=False).returncode != 0


def test_truncated_node_ledger_is_caught_by_the_checkpoints_it_published(live, tmp_path):
    db = live.fed.workdir / "hub.sqlite"
    state = live.fed.nodes["hospital_1"].store.with_suffix(".state.sqlite")
    hub_url = f"sqlite:///{db}"
    with sqlite3.connect(state) as con:
        size = con.execute("SELECT max(seq) FROM ledger_entries").fetchone()[0]
    deadline = time.monotonic() + 30  # the agent publishes its head on its next cycle
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as con:
            sizes = [json.loads(b)["payload"]["size"] for (b,) in con.execute(
                "SELECT e.body FROM envelopes e JOIN nodes n ON n.id = e.node_id "
                "WHERE n.name = 'hospital_1' AND e.kind = 'ledger.checkpoint'")]
        if sizes and max(sizes) >= size:
            break
        time.sleep(0.2)
    assert sizes and max(sizes) >= size >= 2
    assert cli(live, "audit", "verify", "--node-state", str(state), "--hub-db",
               hub_url).returncode == 0
    copy = backup(state, tmp_path / "truncated.sqlite")
    with sqlite3.connect(copy) as con:  # drop the tail and every checkpoint that covers it
        con.execute("DELETE FROM ledger_entries WHERE seq = ?", (size,))
        con.execute("DELETE FROM ledger_checkpoints WHERE size >= ?", (size,))
    alone = cli(live, "audit", "verify", "--node-state", str(copy), check=False)
    assert alone.returncode == 0  # on its own, a clean truncation looks intact
    held = cli(live, "audit", "verify", "--node-state", str(copy), "--hub-db", hub_url,
               "--node-name", "hospital_1", check=False)
    assert held.returncode == 1, held.stdout
