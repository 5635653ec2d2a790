"""The node's ledger: consent, policy and key changes are recorded and verify; tampering fails."""

import json
import sqlite3

from healthspace.cli.main import run
from healthspace.governance.consent import ConsentRecord
from healthspace.governance.policy import UsagePolicy
from healthspace.node import audit, consent
from healthspace.node.state import NodeState


def make_state(tmp_path):
    state = NodeState.init(tmp_path / "n.state.sqlite", name="hospital_x")
    assert state.node_name() == "hospital_x"
    audit.set_policy(state, UsagePolicy(level="L1"))
    assert not audit.set_policy(state, UsagePolicy(level="L1"))  # unchanged: no entry
    consent.upsert(state, [ConsentRecord(person_source_value="a", tier="withheld")])
    audit.record(state, "task.run", audit.task_subject(3, 1, 9), {"status": "completed"})
    return state


def ledger_rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, action, actor FROM ledger_entries ORDER BY seq").fetchall()


def test_node_actions_are_recorded_and_verify(tmp_path, capsys):
    state = make_state(tmp_path)
    assert [r[1] for r in ledger_rows(state.path)] == ["policy.change", "consent.change",
                                                       "task.run"]
    assert run(["audit", "verify", "--node-state", str(state.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["entries"] == 3


def test_edited_node_ledger_fails_naming_the_entry(tmp_path, capsys):
    state = make_state(tmp_path)
    with sqlite3.connect(state.path) as db:
        db.execute("UPDATE ledger_entries SET actor = 'someone else' WHERE seq = 2")
    assert run(["audit", "verify", "--node-state", str(state.path)]) == 1
    assert "2" in capsys.readouterr().out + capsys.readouterr().err


def test_rotated_key_keeps_old_checkpoints_valid(tmp_path, capsys):
    state = make_state(tmp_path)
    statement = state.rotate_key()
    audit.record(state, "key.rotate", f"key:{statement['new_key']}", statement)
    assert run(["audit", "verify", "--node-state", str(state.path)]) == 0
