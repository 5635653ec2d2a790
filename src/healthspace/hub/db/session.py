"""Engine and session factory for the hub store, and schema upgrades through Alembic."""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from fastapi import HTTPException
from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

from healthspace.core.errors import HealthspaceError, InvalidInput

MIGRATIONS = Path(__file__).parent / "migrations"
# How long a SQLite write waits for another writer's lock before giving up. SQLite's busy
# handler retries with a growing back-off (1 ms … 100 ms) until then; ``?timeout=S`` in the
# database URL (the pysqlite connect argument) sets another bound.
BUSY_TIMEOUT_S = 10.0
POOL_SIZE = 40
POOL_OVERFLOW = 10
POOL_TIMEOUT_S = 10.0


class StoreBusy(HTTPException, HealthspaceError):
    """The hub store stayed locked past its busy timeout: HTTP 503 with ``Retry-After``.

    An HTTPException first, so FastAPI's own handler sends the ``Retry-After`` header; a
    HealthspaceError too, so one-shot commands report it as a message, not a traceback.
    The failed statement had no effect and its transaction is rolled back.
    """

    def __init__(self, waited_s: float) -> None:
        message = (f"the hub database is busy: another writer held its lock for more than "
                   f"{waited_s:g} s; the request was not applied, retry it shortly")
        HealthspaceError.__init__(self, message, field="database")
        retry = str(max(1, math.ceil(waited_s)))
        HTTPException.__init__(self, 503, detail=self.to_detail(),
                               headers={"Retry-After": retry})

    def __str__(self) -> str:
        return self.message


# ``?synchronous=`` in a SQLite URL: ``full`` (the default) syncs the write-ahead log to disk
# at every commit, so a commit survives a power cut; ``normal`` syncs it at checkpoints only,
# so the last commits before a power cut or OS crash may be rolled back on restart (never
# corrupted: a process crash, kill -9 included, loses nothing). ``normal`` takes the disk
# sync off every write, which is most of a small transaction's time on slow disks.
SYNCHRONOUS = ("full", "normal")


def _sqlite_pragmas(busy_ms: int, synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets long-poll readers proceed while a result is being written.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    cursor.close()


def _locked(waited_s: float, context: ExceptionContext) -> None:
    """Turn SQLite's "database is locked" (the busy timeout ran out) into :class:`StoreBusy`."""
    original = context.original_exception
    if isinstance(original, sqlite3.OperationalError) and "locked" in str(original):
        raise StoreBusy(waited_s) from context.sqlalchemy_exception


_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|BEGIN\s+IMMEDIATE|CREATE|DROP|ALTER)\b",
                    re.IGNORECASE)


class WriteGate:
    """One writer at a time among this process's SQLite connections, queued in Python.

    SQLite allows one writer; the others wait in its busy handler, which sleeps in steps
    growing to 100 ms and wakes no one when the lock frees, so under concurrent writes a
    short transaction can wait most of a second. The gate queues writers on a lock instead:
    a connection takes it at its first writing statement and gives it back when it returns
    to the pool (after its commit or rollback). Reads never take it (WAL lets them run
    beside the writer). A second connection of a thread that already holds the gate goes on
    to SQLite's own lock, as before. Other processes on the same file still meet SQLite's
    busy handler; waiting longer than the busy bound here is :class:`StoreBusy` too.
    """

    def __init__(self, waited_s: float) -> None:
        self.waited_s = waited_s
        self._lock = threading.Lock()
        self._owner: int | None = None

    def before_execute(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "healthspace.gate" in conn.info or not _WRITE.match(statement):
            return
        if self._owner == threading.get_ident():
            conn.info["healthspace.gate"] = False  # nested: this thread already writes
            return
        if not self._lock.acquire(timeout=self.waited_s):
            raise StoreBusy(self.waited_s)
        self._owner = threading.get_ident()
        conn.info["healthspace.gate"] = True

    def release(self, _dbapi_connection: Any, record: Any, *_: Any) -> None:
        if record is not None and record.info.pop("healthspace.gate", False):
            self._owner = None
            self._lock.release()


def busy_timeout_s(url: str) -> float:
    """The busy bound for a SQLite ``url``: its ``timeout`` query parameter, else the default."""
    value = make_url(url).query.get("timeout")
    return float(value if isinstance(value, str) else BUSY_TIMEOUT_S)


def sqlite_synchronous(url: str) -> str:
    """The ``synchronous`` query parameter of a SQLite ``url`` (default ``full``); anything but
    :data:`SYNCHRONOUS` is an error naming the database URL."""
    value = make_url(url).query.get("synchronous", "full")
    level = value.lower() if isinstance(value, str) else ""
    if level not in SYNCHRONOUS:
        raise InvalidInput(f"synchronous={value!r} in the database URL: use one of "
                           f"{', '.join(SYNCHRONOUS)}", field="db")
    return level


def make_engine(url: str) -> Engine:
    """An engine for ``url``; dialect-specific connection settings are applied here only."""
    # One connection per request thread (anyio's pool runs 40) plus the ledger writer and
    # the background sweeps, so a burst of long-poll re-checks never queues for a connection.
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    in_memory = sqlite and parsed.database in (None, "", ":memory:")
    pool: dict[str, Any] = {} if in_memory else {
        "pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW, "pool_timeout": POOL_TIMEOUT_S}
    synchronous = sqlite_synchronous(url) if sqlite else "full"
    if sqlite:  # ours, not a sqlite3.connect() argument
        parsed = parsed.difference_update_query(["synchronous"])
    engine = create_engine(parsed, pool_pre_ping=True, **pool)
    if engine.dialect.name == "sqlite":
        waited = busy_timeout_s(url)
        event.listen(engine, "connect",
                     partial(_sqlite_pragmas, int(waited * 1000), synchronous))
        event.listen(engine, "handle_error", partial(_locked, waited))
        gate = WriteGate(waited)
        event.listen(engine, "before_cursor_execute", gate.before_execute)
        for moment in ("checkin", "invalidate", "soft_invalidate", "detach", "close"):
            event.listen(engine.pool, moment, gate.release)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def rowcount(session: Session, statement: Executable,
             params: dict[str, Any] | None = None) -> int:
    """Execute an UPDATE and return how many rows it changed (for compare-and-set writes)."""
    result = session.execute(statement, params)
    return result.rowcount if isinstance(result, CursorResult) else 0


def alembic_config(url: str) -> Config:
    """Programmatic Alembic configuration: no alembic.ini needed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (idempotent)."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
