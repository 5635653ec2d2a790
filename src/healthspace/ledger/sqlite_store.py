"""Ledger backend on a stdlib SQLite file (the node's state file): WAL, one short txn per append."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from healthspace.ledger.checkpoint import Checkpoint
from healthspace.ledger.entry import GENESIS_HASH, Entry
from healthspace.ledger.store import LedgerConflict, check_next, check_run

_DDL = """
CREATE TABLE IF NOT EXISTS ledger_entries (
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  subject TEXT NOT NULL, payload_digest TEXT NOT NULL, prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
  id INTEGER PRIMARY KEY, ledger_id TEXT NOT NULL, size INTEGER NOT NULL UNIQUE,
  root TEXT NOT NULL, time TEXT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL);
"""
_COLUMNS = "seq, time, actor, action, subject, payload_digest, prev_hash, hash"
_CP_COLUMNS = "ledger_id, size, root, time, key_id, signature"
_INSERT = f"INSERT INTO ledger_entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _row(e: Entry) -> tuple[int, str, str, str, str, str, str, str]:
    return (e.seq, e.time, e.actor, e.action, e.subject, e.payload_digest, e.prev_hash, e.hash)


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) where needed.
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=30000")
    # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt or reorder them.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class SqliteLedgerStore:
    """A LedgerStore in ``path``; creates its two tables if absent and leaves others alone.

    ``create=False`` opens an existing file without writing anything (for verifiers)."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no SQLite file at {self.path}")
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        if create:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_DDL)

    @property
    def location(self) -> str:
        return f"sqlite:{self.path.resolve()}"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _last(self) -> Entry | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM ledger_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return Entry(*row) if row else None

    def _head(self) -> tuple[int, str]:
        row = self._db.execute(
            "SELECT seq, hash FROM ledger_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_HASH)

    def _write(self, entries: Iterable[Entry]) -> int:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # read-head + insert under one write lock: no forks
            try:
                run = check_run(*self._head(), entries)
                db.executemany(_INSERT, [_row(e) for e in run])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return len(run)

    def append_entry(self, entry: Entry) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                check_next(*self._head(), entry)
                db.execute(_INSERT, _row(entry))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def append_many(self, entries: Iterable[Entry]) -> int:
        return self._write(entries)

    def last_entry(self) -> Entry | None:
        with self._lock:
            return self._last()

    def entry(self, seq: int) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM ledger_entries WHERE seq = ?", (seq,)
            ).fetchone()
        return Entry(*row) if row else None

    def entries(self, start: int = 1, stop: int | None = None) -> Iterator[Entry]:
        # A separate connection: a long scan neither blocks nor is blocked by appends (WAL).
        db = _connect(self.path)
        try:
            cursor = db.execute(
                f"SELECT {_COLUMNS} FROM ledger_entries WHERE seq >= ? AND seq < ? ORDER BY seq",
                (start, stop if stop is not None else 2**63 - 1),
            )
            while rows := cursor.fetchmany(10_000):
                for row in rows:
                    yield Entry(*row)
        finally:
            db.close()

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])

    def add_checkpoint(self, cp: Checkpoint) -> None:
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO ledger_checkpoints ({_CP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (cp.ledger_id, cp.size, cp.root, cp.time, cp.key_id, cp.signature),
                )
            except sqlite3.IntegrityError as exc:
                raise LedgerConflict(f"a checkpoint at size {cp.size} exists") from exc

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_CP_COLUMNS} FROM ledger_checkpoints ORDER BY size, id"
            ).fetchall()
        return [Checkpoint(*row) for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_CP_COLUMNS} FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return Checkpoint(*row) if row else None
