"""Backup and restore of a hub database, taken while the hub runs, checked when restored.

SQLite hubs are copied with SQLite's online backup API (one consistent snapshot; in WAL mode
writers carry on meanwhile); PostgreSQL hubs with ``pg_dump -Fc`` under a snapshot exported
by a REPEATABLE READ transaction, in which the ledger head is read too, so the manifest
describes exactly what the archive holds. A restore checks the files against the manifest,
loads them into a fresh target, compares the ledger head and verifies the whole ledger
(hash chain, Merkle roots, checkpoint signatures) before the target is put in place.
Node state: :mod:`healthspace.ops.node_backup`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from healthspace.core.errors import Conflict, InvalidInput
from healthspace.ledger.sqla_store import LEDGER_CHECKPOINTS, LEDGER_ENTRIES, SqlAlchemyLedgerStore
from healthspace.ledger.verify import VerifyReport, verify
from healthspace.ops import postgres
from healthspace.ops.manifest import LedgerHead, Manifest

MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class RestoreReport:
    """Where a backup went and what the ledger verifier said about the restored copy."""

    target: str
    manifest: Manifest
    ledger: VerifyReport
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "backup_created_at": self.manifest.created_at,
                "backend": self.manifest.backend, "ledger": self.ledger.to_dict(),
                "details": self.details}


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def _backup_file(given: Path) -> Path:
    """The backup file, whether given itself or as its manifest."""
    name = given.name
    return given.with_name(name[: -len(MANIFEST_SUFFIX)]) if name.endswith(MANIFEST_SUFFIX) \
        else given


def _url(value: str) -> str:
    return value if "://" in value else f"sqlite:///{Path(value).resolve()}"


def _backend(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception as exc:  # sqlalchemy raises ArgumentError and friends
        raise InvalidInput(f"not a database URL: {exc}", field="db") from exc


def _sqlite_file(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise InvalidInput("a SQLite hub URL must name a file (sqlite:///path/hub.db)",
                           field="db")
    return Path(database)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# --- facts read from a hub database -----------------------------------------------------

def ledger_head(conn: Connection) -> LedgerHead:
    entries = conn.execute(select(func.count()).select_from(LEDGER_ENTRIES)).scalar_one()
    head = conn.execute(select(LEDGER_ENTRIES.c.hash).order_by(
        LEDGER_ENTRIES.c.seq.desc()).limit(1)).scalar()
    checkpoints = conn.execute(select(func.count()).select_from(LEDGER_CHECKPOINTS)).scalar_one()
    return LedgerHead(int(entries), head, int(checkpoints))


def hub_details(conn: Connection) -> dict[str, Any]:
    """Schema revision and a few counts, so a person can tell backups apart."""
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    counts = {table: int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
              for table in ("organisations", "users", "nodes", "studies", "tasks")}
    return {"schema_revision": revision, "rows": counts}


def verify_hub_ledger(engine: Engine) -> VerifyReport:
    """The existing verifier over the hub ledger, trusting the keys stored beside it."""
    with engine.connect() as conn:
        keys = [row[0] for row in conn.execute(text("SELECT public_key FROM hub_keys"))]
    return verify(SqlAlchemyLedgerStore(engine), keys)


@contextlib.contextmanager
def _engine(url: str) -> Any:
    # A plain engine: no WAL switch, nothing written to a copy that is being checked (the
    # hub's own ``synchronous`` URL parameter is not a sqlite3 connect argument).
    engine = create_engine(make_url(url).difference_update_query(["synchronous"]))
    try:
        yield engine
    finally:
        engine.dispose()


def _check_hub(engine: Engine, manifest: Manifest, where: str) -> tuple[VerifyReport, dict]:
    """Head, counts and full verification of a restored copy; InvalidInput if anything fails."""
    try:
        with engine.connect() as conn:
            head, details = ledger_head(conn), hub_details(conn)
    except Exception as exc:  # a copy that is not a hub database at all
        raise InvalidInput(f"{where} is not a readable hub database: {exc}",
                           field="from") from exc
    manifest.check_ledger(head, where)
    report = verify_hub_ledger(engine)
    if not report.ok:
        raise InvalidInput(f"the restored ledger fails verification at entry "
                           f"{report.first_bad_seq}: {report.problem}", field="from")
    return report, details


# --- backup -------------------------------------------------------------------------------

def _refuse_existing(path: Path, force: bool, field_name: str) -> None:
    if path.exists() and not force:
        raise Conflict(f"{path} already exists; pass --force to replace it", field=field_name)


def sqlite_snapshot(source: Path, target: Path) -> None:
    """A consistent single-file copy of a live SQLite database (online backup API)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # one step: a single read transaction, never restarted by writers
        dst.execute("PRAGMA journal_mode=DELETE")  # self-contained: no -wal beside the copy
        if dst.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise InvalidInput(f"{source} failed SQLite's integrity check", field="db")
    finally:
        dst.close()
        src.close()


def backup_hub(db: str, out: Path, *, force: bool = False) -> Manifest:
    """Back up the hub at ``db`` into ``out`` plus ``out.manifest.json``; returns the manifest."""
    url, out = _url(db), Path(out)
    backend = _backend(url)
    _refuse_existing(out, force, "out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        if backend == "sqlite":
            source = _sqlite_file(url)
            if not source.is_file():
                raise InvalidInput(f"no hub database at {source}", field="db")
            sqlite_snapshot(source, partial)
            with _engine(f"sqlite:///{partial}") as engine, engine.connect() as conn:
                head, details = ledger_head(conn), hub_details(conn)
        elif backend == "postgresql":
            head, details = _pg_dump(url, partial)
        else:
            raise InvalidInput(f"cannot back up a {backend} database (sqlite or postgresql)",
                               field="db")
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    manifest = Manifest(kind="hub", backend=backend, ledger=head,
                        details={**details, "source": _shown(url)})
    manifest.add_file(out)
    manifest.write(manifest_path(out))
    return manifest


def _pg_dump(url: str, target: Path) -> tuple[LedgerHead, dict[str, Any]]:
    """pg_dump under an exported snapshot, reading the ledger head in that same snapshot."""
    with _engine(url) as engine, engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            head, details = ledger_head(conn), hub_details(conn)
            postgres.run_tool("pg_dump", url, ["--format=custom", f"--snapshot={snapshot}",
                                               "--no-owner", "--no-acl", f"--file={target}"])
    return head, details


# --- restore ------------------------------------------------------------------------------

def restore_hub(backup: Path, db: str, *, force: bool = False) -> RestoreReport:
    """Restore a hub backup into ``db`` (refused if ``db`` holds a hub, unless ``force``)."""
    backup = _backup_file(Path(backup))
    manifest = Manifest.read(manifest_path(backup), "hub")
    if backup.name not in manifest.files:
        raise InvalidInput(f"the manifest does not describe {backup.name}", field="from")
    manifest.check_files(backup.parent)
    url = _url(db)
    backend = _backend(url)
    if backend != manifest.backend:
        raise InvalidInput(f"this is a {manifest.backend} backup; restore it into a "
                           f"{manifest.backend} URL, not {backend}", field="db")
    if backend == "sqlite":
        report, details = _restore_sqlite(backup, _sqlite_file(url), manifest, force)
    else:
        report, details = _restore_postgres(backup, url, manifest, force)
    return RestoreReport(_shown(url), manifest, report, details)


def _restore_sqlite(backup: Path, target: Path, manifest: Manifest,
                    force: bool) -> tuple[VerifyReport, dict[str, Any]]:
    _refuse_existing(target, force, "db")
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = target.with_name(target.name + ".restoring")
    _remove_sqlite(fresh)
    try:
        sqlite_snapshot(backup, fresh)  # also runs the integrity check on the copy
        with _engine(f"sqlite:///{fresh}") as engine:
            result = _check_hub(engine, manifest, str(target))
        _remove_sqlite(target)
        os.replace(fresh, target)
    except InvalidInput:
        _remove_sqlite(fresh)
        raise
    except (sqlite3.DatabaseError, OSError) as exc:
        _remove_sqlite(fresh)
        raise InvalidInput(f"{backup} is not a usable SQLite hub backup: {exc}",
                           field="from") from exc
    return result


def _remove_sqlite(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + "-journal"):
        (path.parent / name).unlink(missing_ok=True)


def _user_tables(conn: Connection) -> int:
    return int(conn.execute(text(
        "SELECT COUNT(*) FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")).scalar_one())


def _restore_postgres(backup: Path, url: str, manifest: Manifest,
                      force: bool) -> tuple[VerifyReport, dict[str, Any]]:
    """pg_restore in one transaction (a failed load leaves the target as it was), then
    check; a target that was empty is emptied again if the check fails."""
    postgres.list_archive(backup)
    with _engine(url) as engine:
        try:
            with engine.connect() as conn:
                occupied = _user_tables(conn) > 0
        except Exception as exc:
            raise InvalidInput(f"cannot connect to {_shown(url)}: {exc}", field="db") from exc
        if occupied and not force:
            raise Conflict(f"{_shown(url)} already holds tables; restore into an empty "
                           "database or pass --force to replace them", field="db")
        options = ["--no-owner", "--no-acl", "--single-transaction", "--exit-on-error"]
        if occupied:
            options += ["--clean", "--if-exists"]
        postgres.run_tool("pg_restore", url, [*options, str(backup)])
        try:
            return _check_hub(engine, manifest, _shown(url))
        except InvalidInput:
            if not occupied:
                with engine.begin() as conn:
                    conn.execute(text("DROP SCHEMA public CASCADE"))
                    conn.execute(text("CREATE SCHEMA public"))
            raise
