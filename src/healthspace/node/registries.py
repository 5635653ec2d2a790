"""Registries on the node: each one it takes part in, materialised in a DuckDB file of its own
beside the store (never inside the read-only CDM store), and lent to the tasks that target it.

A registry file holds ``cohort`` (``person_id, index_date`` of every cohort member),
``dataset`` (``person_id, index_date`` and the dataset's columns, built by the analysis-dataset
builder) and ``meta`` (one row: name, version, digest, when, from which store version, the
definition). No consent is applied in the file: a task applies its own consent filter to the
rows at query time, as it would to a compiled cohort. A file is written under a temporary name
and renamed over the old one, so a reader sees the old rows or the new, never half of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from healthspace.analyses.base import LocalContext, RegistryRows
from healthspace.cohort.dataset import build_analysis_table, load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.core.canonical import canonical_json
from healthspace.core.clock import Clock, SystemClock, iso
from healthspace.core.models import TaskAssignment
from healthspace.core.registry_defs import RegistryView, Size, definition_digest
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.privacy.disclosure import release_count

log = logging.getLogger("healthspace.node")

SUFFIX = ".registries"
DEFINITIONS = "definitions.json"
# Session temp tables a task reads a registry's rows from (healthspace.analyses.base).
SESSION_COHORT, SESSION_DATASET = "_hs_registry_cohort", "_hs_registry_dataset"
_BUILT_COHORT, _BUILT_DATASET = "_hs_reg_build_cohort", "hs_registry_build"
_ATTACHED = "_hs_registry_file"
_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*(\([0-9, ]+\))?$")
_KINDS = {"integer": "BIGINT", "float": "DOUBLE", "boolean": "BOOLEAN"}


def registries_dir(store: str | Path) -> Path:
    """The node's registry folder, beside the store: ``h1.duckdb`` -> ``h1.registries/``."""
    return Path(store).with_suffix(SUFFIX)


def file_of(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}.duckdb"


@dataclass(frozen=True)
class Materialised:
    """What a registry file holds (its ``meta`` row)."""

    name: str
    version: int
    digest: str
    refreshed_at: datetime
    store_version: float | None
    persons: int  # cohort members (no consent applied)
    rows: int  # analysis-dataset rows (no consent applied)
    size: Size  # consented persons for research, released (rounded to 10, or "<k")
    dataset_size: Size
    seconds: float
    cohort: dict[str, Any]
    dataset: dict[str, Any]
    path: Path


def released(n: int, k: int) -> Size:
    """A size as the node publishes it: rounded to 10, ``"<k"`` below the minimum cell size."""
    value = release_count(n, k)
    return value if isinstance(value, str) else int(round(n / 10) * 10)


# --- writing ----------------------------------------------------------------------------------


def materialise(con: Any, definition: RegistryView, folder: Path, *, site: str, k: int,
                store_version: float | None, consent: ConsentFilter | None = None,
                clock: Clock | None = None) -> Materialised:
    """Build ``definition``'s rows on the CDM connection ``con`` and swap its file in.

    ``consent`` (the node's filter for research) only decides the published sizes; the rows
    themselves are every cohort member's.
    """
    started = time.perf_counter()
    cohort, spec = load_cohort(definition.cohort), load_dataset(definition.dataset)
    if definition.digest != definition_digest(definition.cohort, definition.dataset):
        raise ValueError(f"registry {definition.name}: the digest does not match its definition")
    ctx = LocalContext(con=con, site=site, min_cell_size=k, cohort=cohort)
    sql, params = ctx.cohort_persons_sql()
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_BUILT_COHORT} AS SELECT c.person_id, "
                f"c.index_date FROM ({sql}) AS c ORDER BY c.person_id", params)
    try:
        build_analysis_table(ctx, spec, _BUILT_DATASET, person_ids=True)
        names = [name for _, name in spec.columns()]
        cohort_rows = _frame(con, f"SELECT person_id, index_date FROM temp.{_BUILT_COHORT}")
        dataset_rows = _frame(
            con, f"SELECT d._person_id AS person_id, c.index_date, "
            f"{', '.join(f'd.{_q(n)}' for n in names)} FROM temp.{_BUILT_DATASET} AS d "
            f"JOIN temp.{_BUILT_COHORT} AS c ON c.person_id = d._person_id "
            "ORDER BY d._person_id")
        types = {**_types(con, _BUILT_DATASET), "person_id": "BIGINT", "index_date": "DATE"}
        size, dataset_size = _sizes(con, consent, site, k)
    finally:
        for table in (_BUILT_COHORT, _BUILT_DATASET):
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")
    now = (clock or SystemClock()).now()
    made = Materialised(
        name=definition.name, version=definition.version, digest=definition.digest,
        refreshed_at=now, store_version=store_version, persons=len(cohort_rows),
        rows=len(dataset_rows), size=size, dataset_size=dataset_size,
        seconds=round(time.perf_counter() - started, 3), cohort=definition.cohort,
        dataset=definition.dataset, path=file_of(folder, definition.name))
    _write(made, cohort_rows, dataset_rows, ["person_id", "index_date", *names], types)
    return made


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _frame(con: Any, sql: str) -> pd.DataFrame:
    return con.execute(sql).df()


def _types(con: Any, table: str) -> dict[str, str]:
    """Column -> SQL type of a session table: DuckDB's own, else from an adapter's kinds."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        rows = con.execute(f"DESCRIBE temp.{table}").fetchall()
        return {str(r[0]): str(r[1]) for r in rows if _TYPE.match(str(r[1]))}
    result = con.execute(f"SELECT * FROM temp.{table} LIMIT 0")
    return {str(d[0]): _KINDS[str(d[1])] for d in result.description if str(d[1]) in _KINDS}


def _sizes(con: Any, consent: ConsentFilter | None, site: str, k: int) -> tuple[Size, Size]:
    counted = LocalContext(con=con, site=site, min_cell_size=k, consent=consent)
    keep = counted.consented_persons_sql()
    out = []
    for table, column in ((_BUILT_COHORT, "person_id"), (_BUILT_DATASET, "_person_id")):
        row = con.execute(f"SELECT COUNT(*) FROM temp.{table} WHERE {column} IN ({keep})"
                          ).fetchone()
        out.append(released(int(row[0]) if row else 0, counted.min_cell_size))
    return out[0], out[1]


def _write(made: Materialised, cohort: pd.DataFrame, dataset: pd.DataFrame,
           columns: list[str], types: dict[str, str]) -> None:
    """Write the file under a temporary name, then rename it over the old one (atomic)."""
    made.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = made.path.with_name(f".{made.name}.{os.getpid()}.tmp.duckdb")
    tmp.unlink(missing_ok=True)
    out = duckdb.connect(str(tmp))
    try:
        for table, frame, cols in (("cohort", cohort, ["person_id", "index_date"]),
                                   ("dataset", dataset, columns)):
            out.register("_src", frame)
            select = ", ".join(f"CAST({_q(c)} AS {types[c]}) AS {_q(c)}" if c in types
                               else _q(c) for c in cols)
            out.execute(f"CREATE TABLE {table} AS SELECT {select} FROM _src")
            out.unregister("_src")
        out.execute("CREATE TABLE meta (name VARCHAR, version INTEGER, digest VARCHAR, "
                    "refreshed_at VARCHAR, store_version DOUBLE, persons BIGINT, rows BIGINT, "
                    "size VARCHAR, dataset_size VARCHAR, seconds DOUBLE, cohort VARCHAR, "
                    "dataset VARCHAR)")
        out.execute("INSERT INTO meta VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            made.name, made.version, made.digest, iso(made.refreshed_at), made.store_version,
            made.persons, made.rows, json.dumps(made.size), json.dumps(made.dataset_size),
            made.seconds, canonical_json(made.cohort).decode(),
            canonical_json(made.dataset).decode()])
        out.execute("CHECKPOINT")
    finally:
        out.close()
    os.replace(tmp, made.path)


def drop(folder: Path, name: str) -> bool:
    """Delete a registry's file (the node no longer takes part, or the registry is gone)."""
    path = file_of(folder, name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


# --- reading ----------------------------------------------------------------------------------


def read(path: Path) -> Materialised | None:
    """A registry file's ``meta``; None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute("SELECT name, version, digest, refreshed_at, store_version, persons, "
                          "rows, size, dataset_size, seconds, cohort, dataset FROM meta"
                          ).fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    if row is None:
        return None
    return Materialised(
        name=row[0], version=int(row[1]), digest=row[2],
        refreshed_at=datetime.fromisoformat(str(row[3]).replace("Z", "+00:00")),
        store_version=row[4], persons=int(row[5]), rows=int(row[6]), size=json.loads(row[7]),
        dataset_size=json.loads(row[8]), seconds=float(row[9]), cohort=json.loads(row[10]),
        dataset=json.loads(row[11]), path=path)


def materialised(folder: Path) -> list[Materialised]:
    """Every registry file in ``folder``, by name."""
    if not Path(folder).is_dir():
        return []
    found = (read(p) for p in sorted(Path(folder).glob("*.duckdb")) if not p.name.startswith("."))
    return [m for m in found if m is not None]


def save_definitions(folder: Path, definitions: list[RegistryView]) -> None:
    """Keep the definitions last fetched from the hub (``node registry refresh`` offline)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{DEFINITIONS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps([d.model_dump(mode="json") for d in definitions], indent=1),
                   encoding="utf-8")
    os.replace(tmp, folder / DEFINITIONS)


def load_definitions(folder: Path) -> list[RegistryView]:
    path = Path(folder) / DEFINITIONS
    if not path.is_file():
        return []
    return [RegistryView.model_validate(d) for d in json.loads(path.read_text("utf-8"))]


# --- lending rows to a task -------------------------------------------------------------------


@dataclass(frozen=True)
class Shelf:
    """Where a task finds registry rows: the folder, and the store version now (a file built
    from an older store is not used)."""

    folder: Path
    store_version: float | None = None

    def usable(self, task: TaskAssignment) -> Materialised | str:
        """The matching materialisation, or why the task must be computed live."""
        ref = task.registry
        assert ref is not None
        made = read(file_of(self.folder, ref.name))
        if made is None:
            return "not materialised here"
        if (made.version, made.digest) != (ref.version, ref.digest):
            return f"materialised v{made.version}, the task needs v{ref.version}"
        if canonical_json(made.cohort) != canonical_json(task.cohort) or (
                task.dataset is not None
                and canonical_json(made.dataset) != canonical_json(task.dataset)):
            return "the task's definition differs from the materialised one"
        if self.store_version is not None and made.store_version != self.store_version:
            return "the store changed since the last refresh"
        return made

    def attach(self, con: Any, task: TaskAssignment) -> RegistryRows | None:
        """Load the registry's rows into the task's session, or None (computed live)."""
        if task.registry is None or task.cohort is None:
            return None
        found = self.usable(task)
        if isinstance(found, str):
            log.info("task %s: registry %s v%s: %s; computing live from its definition",
                     task.task_id, task.registry.name, task.registry.version, found)
            return None
        with_dataset = task.dataset is not None
        _load(con, found.path, with_dataset)
        log.info("task %s: rows from registry %s v%s (refreshed %s)", task.task_id,
                 found.name, found.version, iso(found.refreshed_at))
        return RegistryRows(SESSION_COHORT, SESSION_DATASET if with_dataset else None)

    @staticmethod
    def detach(con: Any, rows: RegistryRows | None) -> None:
        if rows is None:
            return
        for table in (rows.cohort_table, rows.dataset_table):
            if table is not None:
                if isinstance(con, duckdb.DuckDBPyConnection):
                    con.execute(f"DROP TABLE IF EXISTS temp.{table}")
                else:
                    con.unregister(table)


def _load(con: Any, path: Path, with_dataset: bool) -> None:
    tables = [("cohort", SESSION_COHORT)] + ([("dataset", SESSION_DATASET)] if with_dataset
                                              else [])
    if isinstance(con, duckdb.DuckDBPyConnection):  # exact types, no copy through Python
        con.execute(f"DETACH DATABASE IF EXISTS {_ATTACHED}")
        con.execute(f"ATTACH '{_literal(path)}' AS {_ATTACHED} (READ_ONLY)")
        try:
            for source, target in tables:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM "
                            f"{_ATTACHED}.main.{source} ORDER BY person_id")
        finally:
            con.execute(f"DETACH DATABASE {_ATTACHED}")
        return
    reader = duckdb.connect(str(path), read_only=True)  # another engine: through pandas
    try:
        for source, target in tables:
            con.register(target, reader.execute(f"SELECT * FROM {source} ORDER BY person_id")
                         .df())
    finally:
        reader.close()


def _literal(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")
