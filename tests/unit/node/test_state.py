"""The node's SQLite state file: keys, identity vault, outbox, run log."""

import sqlite3
from pathlib import Path

import pytest

from healthspace.core.errors import IngestError, InvalidInput
from healthspace.node.state import NodeState


def test_init_is_idempotent_and_keeps_the_key(tmp_path):
    path = tmp_path / "node.state.sqlite"
    first = NodeState.init(path).public_key_hex()
    second = NodeState.init(path).public_key_hex()
    assert first == second and len(first) == 64
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_missing_state_names_the_fix(tmp_path):
    with pytest.raises(InvalidInput, match="node init"):
        NodeState.open(tmp_path / "nope.sqlite")


def test_identity_vault_replaces_on_reload(tmp_path):
    state = NodeState.init(tmp_path / "s.sqlite")
    csv = tmp_path / "identity.csv"
    csv.write_text("person_id,national_id\n1,110101199001010011\n-2,110101199001010022\n")
    assert state.load_identity(csv) == 2
    csv.write_text("PERSON_ID,NATIONAL_ID\n3,110101199001010033\n")
    assert state.load_identity(csv) == 1
    assert state.identity_count() == 1


def test_identity_vault_bad_row_names_file_row_column_and_keeps_old(tmp_path):
    state = NodeState.init(tmp_path / "s.sqlite")
    good = tmp_path / "good.csv"
    good.write_text("person_id,national_id\n1,A\n2,B\n")
    state.load_identity(good)
    bad = tmp_path / "bad.csv"
    bad.write_text("person_id,national_id\n1,A\nx2,B\n")
    with pytest.raises(IngestError) as info:
        state.load_identity(bad)
    assert "bad.csv" in str(info.value) and "row 2" in str(info.value)
    assert info.value.column == "person_id"
    assert state.identity_count() == 2


def test_outbox_keeps_results_until_acknowledged(tmp_path):
    state = NodeState.init(tmp_path / "s.sqlite")
    state.put_result(7, 1, 1, {"status": "completed", "partial": {"count": 12}})
    state.put_result(8, 1, 1, {"status": "failed", "error": "x"})
    assert [t for t, _ in state.pending_results()] == [7, 8]
    state.ack_result(7)
    assert [t for t, _ in state.pending_results()] == [8]
    assert state.has_result(7) == {"status": "completed", "partial": {"count": 12}}
    reopened = NodeState.open(tmp_path / "s.sqlite")
    assert [t for t, _ in reopened.pending_results()] == [8]


def test_run_log_records_what_ran(tmp_path):
    state = NodeState.init(tmp_path / "s.sqlite")
    state.log_run(task_id=1, study_id=2, round=1, analysis="cohort_count", consumer="a",
                  purpose="research", status="completed", records=40, seconds=0.5, error=None)
    (run,) = state.runs()
    assert run["analysis"] == "cohort_count" and run["records"] == 40


def test_a_new_state_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o022)  # the common default, which would leave it world-readable
    try:
        state = NodeState.init(tmp_path / "h1.state.sqlite")
    finally:
        os.umask(previous)
    for candidate in tmp_path.iterdir():  # the database and SQLite's -wal / -shm beside it
        assert candidate.stat().st_mode & 0o777 == 0o600, candidate
    assert state.public_key_hex()
