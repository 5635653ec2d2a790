"""Bulk-load OMOP CDM CSV files into a node's DuckDB store, validating names, types and keys."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from healthspace.cdm.deid import DeidConfig, deidentify
from healthspace.cdm.ingest_checks import (
    UNIQUE_KEY_TABLES,
    _bad,
    _BadRows,
    _diagnose,
    _duplicate_count,
    _Plan,
    _primary_key,
    _scan,
    _typed_select,
)
from healthspace.cdm.schema import CDM_VERSION, PERSON_TABLES, TABLES, V53_RENAMES
from healthspace.cdm.store import META_TABLE, create_schema
from healthspace.core.clock import iso, utcnow
from healthspace.core.errors import IngestError, InvalidInput

DEFAULT_DEID = DeidConfig()  # node ingest de-identifies unless told not to
FORMATS = ("omop-csv",)  # ingest_dir; FHIR goes through ingest_fhir
IDENTITY_STEM = "identity"
_SUFFIXES = (".csv.gz", ".csv")

Progress = Callable[[str, int, int], None]


@dataclass
class IngestReport:
    """What an ingest did; ``to_dict()`` is the JSON the CLI prints and the store keeps."""

    source: str
    store: str | None = None
    cdm_version: str = CDM_VERSION
    tables: dict[str, int] = field(default_factory=dict)  # loaded table -> rows
    files: dict[str, str] = field(default_factory=dict)  # loaded table -> file name
    skipped_files: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    renamed_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    duplicate_ids: dict[str, int] = field(default_factory=dict)  # rows repeating an earlier id
    identity_file: str | None = None
    deid: dict[str, Any] | None = None  # what de-identification changed (cdm.deid)
    ingested_at: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _swapped_in(store: Path, *, keep: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a temporary copy beside ``store`` (empty, or the current store with
    ``keep``) that atomically replaces ``store`` when the block succeeds; on any failure the
    temporary file goes and the old store stays byte-identical."""
    if store.is_dir():
        raise InvalidInput(f"store path {store} is a directory", field="store")
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(f"{store.name}.ingest-{os.getpid()}.tmp")
    _remove(tmp, Path(f"{tmp}.wal"))
    try:
        if keep and store.exists():
            shutil.copyfile(store, tmp)
        con = duckdb.connect(str(tmp))
        try:
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, store)
    except BaseException:
        _remove(tmp, Path(f"{tmp}.wal"))
        raise
    # A WAL left by some earlier writer of the old file must never be replayed onto the new one.
    _remove(Path(f"{store}.wal"))
    _fsync_dir(store.parent)


def ingest_dir(
    store: Path,
    src_dir: Path,
    *,
    fmt: str = "omop-csv",
    progress: Progress | None = None,
    deid: DeidConfig | None = DEFAULT_DEID,
) -> IngestReport:
    """Build a fresh store from ``src_dir`` beside ``store`` and atomically swap it in,
    de-identified (``healthspace.cdm.deid``) unless ``deid`` is None."""
    if fmt not in FORMATS:
        raise InvalidInput(
            f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}", field="format"
        )
    store = Path(store)
    started = time.perf_counter()
    with _swapped_in(store) as con:
        report = load_into(con, Path(src_dir), progress=progress, store=str(store), deid=deid)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


ANALYSIS_TABLE = "analysis_data"


def ingest_table(store: Path, csv_file: Path) -> dict[str, Any]:
    """Load one CSV as the store's ``analysis_data`` table (one row per person), atomically.

    For registries and research tables that are not in the CDM: table analyses (glm, km, cox,
    summary) run over it when a study gives no cohort and dataset. The rest of the store is
    kept; a failure leaves the old store byte-identical.
    """
    store, csv_file = Path(store), Path(csv_file)
    if not csv_file.is_file():
        raise InvalidInput(f"table file {csv_file} does not exist", field="file")
    started = time.perf_counter()
    with _swapped_in(store, keep=True) as con:
        create_schema(con)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {ANALYSIS_TABLE} AS "
                        "SELECT * FROM read_csv_auto(?, header = true)", [str(csv_file)])
        except duckdb.Error as exc:
            raise InvalidInput(f"cannot read {csv_file}: {exc}", field="file") from None
        row = con.execute(f"SELECT count(*) FROM {ANALYSIS_TABLE}").fetchone()
        columns = [r[0] for r in con.execute(f"DESCRIBE {ANALYSIS_TABLE}").fetchall()]
    return {"store": str(store), "table": ANALYSIS_TABLE, "rows": int(row[0]) if row else 0,
            "columns": columns, "seconds": round(time.perf_counter() - started, 3)}


def load_into(
    con: duckdb.DuckDBPyConnection,
    src_dir: Path,
    progress: Progress | None = None,
    *,
    store: str | None = None,
    deid: DeidConfig | None = None,
) -> IngestReport:
    """Replace the CDM contents of an open connection with ``src_dir``, in one transaction;
    with ``deid``, de-identified in the same transaction."""
    started = time.perf_counter()
    src = Path(src_dir)
    report = IngestReport(source=str(src.resolve()), store=store)
    sources = _find_sources(src, report)
    plans = [_plan(table, sources[table], report) for table in TABLES if table in sources]
    create_schema(con)
    # DuckDB's own bar would write to stdout, which the CLI keeps for the JSON report.
    con.execute("SET enable_progress_bar = false")
    con.execute("BEGIN TRANSACTION")
    try:
        for table in TABLES:
            con.execute(f"DELETE FROM {table}")
        for plan in plans:
            rows = _load_table(con, plan)
            report.tables[plan.table] = rows
            report.files[plan.table] = plan.path.name
            if dups := _duplicate_count(con, plan.table):
                report.duplicate_ids[plan.table] = dups
            if progress is not None:
                progress(plan.table, rows, rows)
        if deid is not None:
            report.deid = deidentify(con, deid).to_dict()
        report.orphans = _orphans(con, report.tables)
        report.ingested_at = iso(utcnow())
        report.seconds = round(time.perf_counter() - started, 3)
        _write_meta(con, report)
        con.execute("COMMIT")
    except _BadRows as bad:
        con.execute("ROLLBACK")
        raise _diagnose(con, bad.plan, str(bad)) from bad.__cause__
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    return report


# --- finding files and planning columns -------------------------------------------


def _find_sources(src: Path, report: IngestReport) -> dict[str, Path]:
    if not src.is_dir():
        raise IngestError(f"source directory {src} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(src.iterdir()):
        name = path.name.lower()
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix is None or not path.is_file():
            continue
        stem = name[: -len(suffix)]
        if stem == IDENTITY_STEM:
            if report.identity_file is not None:
                raise IngestError("more than one identity file", file=path.name)
            report.identity_file = str(path.resolve())
        elif stem not in TABLES:
            report.skipped_files.append(path.name)
        elif stem in found:
            raise IngestError(f"two files for table {stem}: {found[stem].name}", file=path.name)
        else:
            found[stem] = path
    if not found:
        raise IngestError(f"no OMOP CDM table files (<table>.csv or <table>.csv.gz) in {src}")
    return found


def _read_header(path: Path) -> list[str]:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as gz:
                header = next(csv.reader(gz), None)
        else:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IngestError(f"cannot read the header row: {exc}", file=path.name) from exc
    if not header or not any(h.strip() for h in header):
        raise IngestError("file is empty: no header row", file=path.name)
    return header


def _plan(table: str, path: Path, report: IngestReport) -> _Plan:
    header = _read_header(path)
    renames = V53_RENAMES.get(table, {})
    known = {c.name for c in TABLES[table]}
    positions: dict[str, int] = {}
    ignored: list[str] = []
    renamed: dict[str, str] = {}
    for i, raw in enumerate(header):
        name = raw.strip().lower()
        if name in renames:
            renamed[name] = name = renames[name]
        if name not in known:
            if name:
                ignored.append(raw.strip())
            continue
        if name in positions:
            raise IngestError(
                f"column {name} appears twice in the header", file=path.name, column=raw
            )
        positions[name] = i
    for col in TABLES[table]:
        if col.required and col.name not in positions:
            raise IngestError(
                "required column missing from the header", file=path.name, column=col.name
            )
    missing = [c.name for c in TABLES[table] if c.name not in positions]
    if ignored:
        report.ignored_columns[table] = ignored
    if missing:
        report.missing_columns[table] = missing
    if renamed:
        report.renamed_columns[table] = renamed
    return _Plan(table, path, header, positions)


# --- SQL for one file -------------------------------------------------------------


def _load_table(con: duckdb.DuckDBPyConnection, plan: _Plan) -> int:
    cols = plan.columns()
    checked = [
        f"CASE WHEN {_bad(col, i)} THEN error('invalid value') ELSE t{i} END"
        if col.type != "VARCHAR"
        else f"t{i}"
        for col, i in cols
    ]
    sql = (
        f"INSERT INTO {plan.table} ({', '.join(c.name for c, _ in cols)}) "
        f"SELECT {', '.join(checked)} FROM ({_typed_select(plan, _scan(plan))})"
    )
    try:
        row = con.execute(sql).fetchone()
        key = _primary_key(plan.table)
        if (
            key
            and plan.table in UNIQUE_KEY_TABLES
            and con.execute(
                f"SELECT 1 FROM {plan.table} GROUP BY {key} HAVING count(*) > 1 LIMIT 1"
            ).fetchone()
        ):
            raise _BadRows(plan, f"duplicate {key}")
    except duckdb.Error as exc:
        raise _BadRows(plan, str(exc)) from exc
    return int(row[0]) if row else 0


# --- finding the exact row after a failure ----------------------------------------


# --- after loading ----------------------------------------------------------------


def _orphans(con: duckdb.DuckDBPyConnection, loaded: dict[str, int]) -> dict[str, int]:
    """Rows of person-level tables whose person_id is not in person (kept, only counted)."""
    out: dict[str, int] = {}
    for table in PERSON_TABLES:
        if not loaded.get(table):
            continue
        row = con.execute(
            f"SELECT count(*) FROM {table} x "
            "WHERE NOT EXISTS (SELECT 1 FROM person p WHERE p.person_id = x.person_id)"
        ).fetchone()
        if row and row[0]:
            out[table] = int(row[0])
    return out


def _write_meta(con: duckdb.DuckDBPyConnection, report: IngestReport) -> None:
    payload = json.dumps(report.to_dict(), sort_keys=True)
    con.execute(f"DELETE FROM {META_TABLE}")
    con.executemany(
        f"INSERT INTO {META_TABLE} VALUES (?, ?, ?, ?, ?)",
        [
            (t, report.tables.get(t, 0), report.files.get(t), report.ingested_at, payload)
            for t in TABLES
        ],
    )


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
