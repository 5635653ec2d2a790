"""Backup and restore of a node: its state file (keys, ledger, budgets) and its DuckDB store.

The state file is SQLite and changes while the agent runs, so it is copied with the online
backup API. The DuckDB store is never written in place: ingests build a new file beside it,
checkpoint it and rename it over the old one. A byte copy read from one open file descriptor
is therefore one complete store version, old or new, never a mix; a shared ``fcntl`` lock on
that descriptor (the lock DuckDB takes for a read-only connection) additionally keeps anyone
from opening the store read-write for the duration. That is byte-exact and as fast as the
disk, where ``EXPORT DATABASE`` would re-encode every table and need an ``IMPORT`` to restore.
A ``.wal`` beside the store belongs to no checkpointed version and is not copied.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import duckdb

from healthspace.auditing import verify_node
from healthspace.cdm.store import state_path
from healthspace.core.errors import Conflict, InvalidInput
from healthspace.ledger.verify import VerifyReport
from healthspace.ops.backup import RestoreReport, sqlite_snapshot
from healthspace.ops.manifest import LedgerHead, Manifest

STATE_FILE = "state.sqlite"
STORE_FILE = "store.duckdb"
MANIFEST_FILE = "manifest.json"
LOCK_TIMEOUT_SECONDS = 30.0


def _state_head(path: Path) -> tuple[LedgerHead, dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "ledger_entries" not in tables:
            return LedgerHead(0, None, 0), {}
        entries, = db.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
        head = db.execute("SELECT hash FROM ledger_entries ORDER BY seq DESC LIMIT 1").fetchone()
        cps, = db.execute("SELECT COUNT(*) FROM ledger_checkpoints").fetchone()
        name = db.execute("SELECT value FROM meta WHERE key = 'node_name'").fetchone()
    finally:
        db.close()
    return LedgerHead(int(entries), head[0] if head else None, int(cps)), \
        {"node": name[0] if name else None}


def _one(con: duckdb.DuckDBPyConnection, query: str) -> Any:
    row = con.execute(query).fetchone()
    return row[0] if row else None


def store_tables(path: Path) -> dict[str, int]:
    """Row count of every table in a DuckDB store (opened read-only)."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise InvalidInput(f"{path} is not a readable DuckDB store: {exc}", field="from") from exc
    try:
        names = [row[0] for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "ORDER BY table_name").fetchall()]
        return {name: int(_one(con, f'SELECT COUNT(*) FROM "{name}"'))
                for name in names}
    finally:
        con.close()


def _lock_shared(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise Conflict(f"{path} is open for writing by another process; try again "
                               "when it is done", field="store") from None
            time.sleep(0.1)


def copy_store(store: Path, target: Path) -> None:
    """Copy one complete version of a DuckDB store under a shared lock (see module doc)."""
    fd = os.open(store, os.O_RDONLY)
    try:
        _lock_shared(fd, store)
        with os.fdopen(os.dup(fd), "rb") as src, target.open("wb") as dst:
            src.seek(0)
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    finally:
        os.close(fd)  # releases the lock


def backup_node(store: Path, out: Path, *, force: bool = False) -> Manifest:
    """Back up the node whose store is ``store`` into the folder ``out``."""
    store, out = Path(store), Path(out)
    state = state_path(store)
    for path, what in ((store, "store"), (state, "state file")):
        if not path.is_file():
            raise InvalidInput(f"no node {what} at {path}", field="store")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise Conflict(f"{out} exists and is not empty; pass --force to replace it",
                       field="out")
    out.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, STORE_FILE, MANIFEST_FILE):
        (out / name).unlink(missing_ok=True)
    partial_state, partial_store = out / (STATE_FILE + ".partial"), out / (STORE_FILE + ".partial")
    try:
        sqlite_snapshot(state, partial_state)
        copy_store(store, partial_store)
        head, details = _state_head(partial_state)
        details["tables"] = store_tables(partial_store)
        os.replace(partial_state, out / STATE_FILE)
        os.replace(partial_store, out / STORE_FILE)
    except BaseException:
        partial_state.unlink(missing_ok=True)
        partial_store.unlink(missing_ok=True)
        raise
    details["source"] = str(store.resolve())
    manifest = Manifest(kind="node", backend="sqlite+duckdb", ledger=head, details=details)
    manifest.add_file(out / STATE_FILE)
    manifest.add_file(out / STORE_FILE)
    manifest.write(out / MANIFEST_FILE)
    return manifest


def _verify_state(path: Path, manifest: Manifest, where: str) -> VerifyReport:
    head, _ = _state_head(path)
    manifest.check_ledger(head, where)
    report, _ = verify_node(path)  # the `healthspace audit verify --node-state` verifier
    if not report.ok:
        raise InvalidInput(f"the restored node ledger fails verification at entry "
                           f"{report.first_bad_seq}: {report.problem}", field="from")
    return report


def restore_node(backup: Path, store: Path, *, force: bool = False) -> RestoreReport:
    """Restore a node backup folder to ``store`` and the state file beside it."""
    backup, store = Path(backup), Path(store)
    folder = backup.parent if backup.name == MANIFEST_FILE else backup
    manifest = Manifest.read(folder / MANIFEST_FILE, "node")
    manifest.check_files(folder)
    state = state_path(store)
    for path in (store, state):
        if path.exists() and not force:
            raise Conflict(f"{path} already exists; pass --force to replace it", field="store")
    store.parent.mkdir(parents=True, exist_ok=True)
    fresh_state = state.with_name(state.name + ".restoring")
    fresh_store = store.with_name(store.name + ".restoring")
    try:
        sqlite_snapshot(folder / STATE_FILE, fresh_state)
        shutil.copyfile(folder / STORE_FILE, fresh_store)
        report = _verify_state(fresh_state, manifest, str(state))
        tables = store_tables(fresh_store)
        if tables != manifest.details.get("tables"):
            raise InvalidInput(f"the restored store's tables {tables} differ from the "
                               "backed-up ones", field="from")
        for stale in (f"{state}-wal", f"{state}-shm", f"{store}.wal"):
            Path(stale).unlink(missing_ok=True)
        os.replace(fresh_state, state)
        os.replace(fresh_store, store)
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{folder / STATE_FILE} is not a usable node state backup: {exc}",
                           field="from") from exc
    finally:
        for leftover in (fresh_state, fresh_store):
            leftover.unlink(missing_ok=True)
    details = {"node": manifest.details.get("node"), "state": str(state),
               "tables": len(tables)}
    return RestoreReport(str(store), manifest, report, details)
