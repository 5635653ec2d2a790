"""Backups of a live hub and node, restored into fresh targets and verified; bad ones refused."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hubkit import Space, cluster, hub_at, make_space
from opskit import run_history

from healthspace.cdm.store import state_path
from healthspace.cli.main import run
from healthspace.core.errors import Conflict, InvalidInput
from healthspace.hub.app import create_app
from healthspace.node.state import NodeState
from healthspace.ops import node_backup
from healthspace.ops.backup import backup_hub, manifest_path, restore_hub
from healthspace.ops.node_backup import backup_node, restore_node, store_tables


def served_study(url: str, operator: dict[str, str], study_id: int) -> dict[str, Any]:
    """Serve the hub database at ``url`` and read a study back through the API."""
    with TestClient(create_app(url)) as client:
        response = client.get(f"/api/v1/studies/{study_id}", headers=operator)
        assert response.status_code == 200, response.text
        study: dict[str, Any] = response.json()
    return study


def comparable(study: dict[str, Any]) -> dict[str, Any]:
    return {k: study[k] for k in ("id", "status", "analysis", "result", "nodes") if k in study}


def test_sqlite_hub_backup_taken_while_it_runs_restores_and_verifies(
        history: tuple[Space, dict[str, int]], tmp_path: Path) -> None:
    space, ids = history
    hub = space.hub
    original = hub.study(space.alice, ids["first"])
    stop, busy = threading.Event(), threading.Event()
    submitted: list[int] = []

    def keep_writing() -> None:  # the hub keeps working while the backup is taken
        while not stop.is_set():
            submitted.append(int(hub.submit(space.bob, nodes=["node-b"])["id"]))
            busy.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert busy.wait(30)
        manifest = backup_hub(hub.url, tmp_path / "backup" / "hub.bak")
    finally:
        stop.set()
        writer.join()
    studies = manifest.details["rows"]["studies"]
    assert len(ids) < studies < len(ids) + len(submitted) + 1
    assert manifest.kind == "hub" and manifest.backend == "sqlite"
    assert manifest.ledger.entries > 0 and manifest.ledger.head_hash
    assert manifest.files["hub.bak"]["bytes"] == (tmp_path / "backup" / "hub.bak").stat().st_size

    target = tmp_path / "restored" / "hub.db"
    report = restore_hub(tmp_path / "backup" / "hub.bak", f"sqlite:///{target}")
    assert report.ledger.ok and report.ledger.entries == manifest.ledger.entries
    assert report.ledger.checkpoints == manifest.ledger.checkpoints
    assert report.details["rows"] == manifest.details["rows"]
    assert not target.with_name("hub.db.restoring").exists()
    restored = served_study(f"sqlite:///{target}", hub.operator, ids["first"])
    assert comparable(restored) == comparable(original)
    assert restored["status"] == "completed"


def test_restore_refuses_an_existing_target_unless_forced(
        history: tuple[Space, dict[str, int]], tmp_path: Path) -> None:
    space, _ids = history
    backup = tmp_path / "hub.bak"
    backup_hub(space.hub.url, backup)
    with pytest.raises(Conflict) as caught:
        backup_hub(space.hub.url, backup)
    assert caught.value.field == "out"
    target = tmp_path / "target.db"
    target.write_bytes(b"precious")
    with pytest.raises(Conflict) as caught:
        restore_hub(backup, str(target))
    assert caught.value.field == "db" and target.read_bytes() == b"precious"
    assert restore_hub(backup, str(target), force=True).ledger.ok
    assert target.read_bytes()[:15] == b"SQLite format 3"


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_truncated_or_edited_backups_are_rejected(
        history: tuple[Space, dict[str, int]], tmp_path: Path) -> None:
    space, _ids = history
    good = tmp_path / "good" / "hub.bak"
    backup_hub(space.hub.url, good)

    def variant(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copyfile(good, folder / "hub.bak")
        shutil.copyfile(manifest_path(good), manifest_path(folder / "hub.bak"))
        return folder / "hub.bak"

    corrupted = variant("corrupted")
    _flip_byte(corrupted, corrupted.stat().st_size // 2)
    truncated = variant("truncated")
    truncated.write_bytes(truncated.read_bytes()[:4096])
    for bad, words in ((corrupted, "SHA-256"), (truncated, "truncated")):
        target = tmp_path / f"{bad.parent.name}.db"
        with pytest.raises(InvalidInput) as caught:
            restore_hub(bad, str(target))
        assert caught.value.field == "from" and words in caught.value.message
        assert not target.exists()

    # An edit that also rewrites the manifest's digest is caught by the ledger verifier.
    edited = variant("edited")
    db = sqlite3.connect(edited)
    db.execute("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 3")
    db.commit()
    db.close()
    doc = json.loads(manifest_path(edited).read_text())
    from healthspace.ops.manifest import sha256_file

    doc["files"]["hub.bak"] = {"bytes": edited.stat().st_size, "sha256": sha256_file(edited)}
    manifest_path(edited).write_text(json.dumps(doc))
    target = tmp_path / "edited.db"
    with pytest.raises(InvalidInput) as caught:
        restore_hub(edited, str(target))
    assert "fails verification at entry 3" in caught.value.message
    assert not target.exists() and not target.with_name("edited.db.restoring").exists()

    missing = variant("missing")
    manifest_path(missing).unlink()
    with pytest.raises(InvalidInput, match="no backup manifest"):
        restore_hub(missing, str(tmp_path / "missing.db"))


def test_cli_backup_and_restore_print_the_verification(
        history: tuple[Space, dict[str, int]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    space, _ids = history
    backup = tmp_path / "hub.bak"
    assert run(["backup", "hub", "--db", space.hub.url, "--out", str(backup), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["ledger"]["entries"] > 0
    target = tmp_path / "restored.db"
    assert run(["restore", "hub", "--from", str(backup), "--db", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "intact" in printed and f"{made['ledger']['entries']:,}" in printed
    assert run(["restore", "hub", "--from", str(backup), "--db", str(target)]) == 2
    assert "--force" in capsys.readouterr().err
    assert run(["audit", "verify", "--hub-db", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == made["ledger"]["entries"]
    _flip_byte(backup, 200)
    assert run(["restore", "hub", "--from", str(backup), "--db",
                str(tmp_path / "other.db")]) == 2
    assert "SHA-256" in capsys.readouterr().err


@pytest.mark.slow  # starts this process's PostgreSQL cluster when no other test has
def test_postgresql_hub_backup_restores_through_pg_restore(tmp_path: Path) -> None:
    pg = cluster()
    space = make_space(hub_at(pg.database()))
    try:
        ids = run_history(space)
        original = space.hub.study(space.alice, ids["second"])
        backup = tmp_path / "hub.dump"
        manifest = backup_hub(space.hub.url, backup)
    finally:
        space.hub.close()
    assert manifest.backend == "postgresql" and backup.read_bytes()[:5] == b"PGDMP"
    target = pg.database("restored")
    report = restore_hub(backup, target)
    assert report.ledger.ok and report.ledger.entries == manifest.ledger.entries > 0
    restored = served_study(target, space.hub.operator, ids["second"])
    assert comparable(restored) == comparable(original)
    with pytest.raises(Conflict):
        restore_hub(backup, target)
    assert restore_hub(backup, target, force=True).ledger.ok
    with pytest.raises(InvalidInput) as caught:  # a PostgreSQL dump does not go into SQLite
        restore_hub(backup, str(tmp_path / "x.db"))
    assert caught.value.field == "db"
    # An archive that is not one, with a manifest that matches it: pg_restore refuses it.
    garbage = tmp_path / "garbage" / "hub.dump"
    garbage.parent.mkdir()
    garbage.write_bytes(b"PGDMP" + b"\x00" * 2000)
    from healthspace.ops.manifest import Manifest

    fake = Manifest.read(manifest_path(backup), "hub")
    fake.files = {}
    fake.add_file(garbage)
    fake.write(manifest_path(garbage))
    empty = pg.database("empty")
    with pytest.raises(InvalidInput, match="not a readable pg_dump archive"):
        restore_hub(garbage, empty)


# --- node -----------------------------------------------------------------------------

def test_node_backup_restores_with_its_ledger_verified(node_store: Path, tmp_path: Path) -> None:
    import duckdb

    agent_like = duckdb.connect(str(node_store), read_only=True)  # the agent keeps it open
    try:
        manifest = backup_node(node_store, tmp_path / "backup")
    finally:
        agent_like.close()
    assert manifest.kind == "node" and manifest.details["node"] == "node-a"
    assert manifest.ledger.entries == 5 and manifest.ledger.checkpoints == 5
    assert set(manifest.files) == {"state.sqlite", "store.duckdb"}
    target = tmp_path / "restored" / "hosp.duckdb"
    report = restore_node(tmp_path / "backup", target)
    assert report.ledger.ok and report.ledger.entries == 5
    assert store_tables(target) == store_tables(node_store)
    assert store_tables(target)["person"] == 300
    assert NodeState.open(state_path(target)).public_key_hex() == \
        NodeState.open(state_path(node_store)).public_key_hex()
    assert run(["audit", "verify", "--node-state", str(state_path(target))]) == 0
    with pytest.raises(Conflict):
        restore_node(tmp_path / "backup", target)
    assert restore_node(tmp_path / "backup", target, force=True).ledger.ok


def test_tampered_node_backups_are_rejected(node_store: Path, tmp_path: Path) -> None:
    backup_node(node_store, tmp_path / "backup")
    with pytest.raises(Conflict):  # the backup folder is not overwritten silently
        backup_node(node_store, tmp_path / "backup")
    _flip_byte(tmp_path / "backup" / "store.duckdb", 5000)
    target = tmp_path / "restored" / "hosp.duckdb"
    with pytest.raises(InvalidInput, match="SHA-256"):
        restore_node(tmp_path / "backup", target)
    assert not target.exists() and not state_path(target).exists()
    assert run(["restore", "node", "--from", str(tmp_path / "backup"),
                "--store", str(target)]) == 2


WRITER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # read-write: an in-place writer
print("open", flush=True)
time.sleep(30)
"""


def test_node_backup_waits_for_an_in_place_writer(node_store: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_backup, "LOCK_TIMEOUT_SECONDS", 0.5)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(node_store)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        with pytest.raises(Conflict, match="open for writing"):
            backup_node(node_store, tmp_path / "backup")
    finally:
        writer.kill()
        writer.wait()
    assert backup_node(node_store, tmp_path / "backup", force=True).ledger.entries == 5


def test_unknown_database_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        backup_hub(str(tmp_path / "nothing.db"), tmp_path / "out.bak")
    assert caught.value.field == "db"
    with pytest.raises(InvalidInput) as caught:
        backup_hub("mysql://u@h/db", tmp_path / "out.bak")
    assert caught.value.field == "db"
    assert not (tmp_path / "out.bak").exists()
