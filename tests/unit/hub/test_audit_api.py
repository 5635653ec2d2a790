"""The hub ledger over the API: auditors read entries, the signed head and inclusion proofs."""

from __future__ import annotations

from hubkit import CC_PARTIAL, Space

from healthspace.ledger.checkpoint import Checkpoint, verify_checkpoint
from healthspace.ledger.merkle import verify_inclusion


def test_auditor_reads_the_ledger_and_verifies_an_inclusion_proof(space: Space) -> None:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    entries = hub.ok("GET", "/audit/entries?limit=1000", space.auditor)
    actions = [e["action"] for e in entries]
    assert actions[0] == "hub.init" and "study.submitted" in actions
    results = [e for e in entries if e["action"] == "task.result"]
    assert results[0]["subject"] == f"study:{study['id']}/round:1/task:{task['task_id']}"
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    head = Checkpoint.from_dict(hub.ok("GET", "/audit/head", space.auditor))
    keys = [hub.ok("GET", "/hub/key", space.auditor)["public_key"]]
    assert verify_checkpoint(head, keys) is None and head.size == len(entries)
    seq = results[0]["seq"]
    proof = hub.ok("GET", f"/audit/proof/{seq}", space.auditor)
    assert verify_inclusion(bytes.fromhex(proof["entry_hash"]), seq - 1,
                            proof["checkpoint"]["size"],
                            [bytes.fromhex(p) for p in proof["path"]],
                            bytes.fromhex(proof["checkpoint"]["root"]))
    assert proof["entry_hash"] == results[0]["hash"]


def test_audit_routes_are_for_auditors_and_operators_only(space: Space) -> None:
    hub = space.hub
    for who in (space.alice, space.admin_a, space.node_a):
        assert hub.client.get("/api/v1/audit/entries", headers=who).status_code == 403
    missing = hub.client.get("/api/v1/audit/proof/999999", headers=space.auditor)
    assert missing.status_code == 404 and missing.json()["detail"]["field"] == "seq"
