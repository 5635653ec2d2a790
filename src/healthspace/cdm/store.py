"""The node's CDM store: a DuckDB file written only by ingest and opened read-only by analyses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from healthspace.cdm.engines import tables
from healthspace.cdm.schema import CDM_VERSION, TABLES, ddl
from healthspace.core.errors import InvalidInput, NotFound
from healthspace.core.models import Catalog

META_TABLE = "_healthspace_ingest"

# Vocabulary tables hold the dictionary, not the data: their ids are not "referenced" codes.
_VOCABULARY_TABLES = ("concept", "concept_ancestor")

_META_DDL = f"""CREATE TABLE IF NOT EXISTS {META_TABLE} (
  table_name VARCHAR PRIMARY KEY,
  rows BIGINT NOT NULL,
  source_file VARCHAR,
  ingested_at VARCHAR NOT NULL,
  report VARCHAR NOT NULL
)"""


class StoreNotFound(NotFound):
    """The node store file does not exist (nothing has been ingested yet)."""


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table of the CDM subset and the ingest metadata table (idempotent)."""
    for table in TABLES:
        con.execute(ddl(table).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
    con.execute(_META_DDL)


def open_store(path: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open an existing store; read-only by default so several processes can read at once."""
    p = Path(path)
    if not p.is_file():
        raise StoreNotFound(
            f"node store {p} does not exist; run `healthspace node ingest --store {p} DIR` first",
            field="store",
        )
    try:
        return duckdb.connect(str(p), read_only=read_only)
    except duckdb.Error as exc:
        raise InvalidInput(f"cannot open node store {p}: {exc}", field="store") from exc


def round_count(n: int) -> int:
    """Round a record count to the nearest 100, half up; a non-empty table is at least 100."""
    if n <= 0:
        return 0
    return max(100, (n + 50) // 100 * 100)


def has_table(con: Any, name: str, schema: str | None = None) -> bool:
    """Whether the connection sees table ``name`` (in ``schema``, or any schema incl. temp).

    An engine adapter (:mod:`healthspace.cdm.engines`) has no ``main`` schema: there
    ``schema="main"`` means the CDM's own tables."""
    if not tables.is_duckdb(con):
        if schema is None:
            return tables.has_table(con, name)
        return name.lower() in tables.store_tables(con)
    sql = "SELECT count(*) FROM information_schema.tables WHERE table_name = ?"
    args = [name]
    if schema is not None:
        sql += " AND table_schema = ?"
        args.append(schema)
    row = con.execute(sql, args).fetchone()
    return bool(row and row[0])


def catalog(con: Any) -> Catalog:
    """Describe the store's shape: rounded table sizes and the concept codes in use.

    Works on any engine (:mod:`healthspace.cdm.engines`); a data holder's own database may
    lack tables of the subset, which are then simply absent from the catalog."""
    present = tables.store_tables(con)
    sizes: dict[str, int] = {}
    for table in TABLES:
        n = tables.count_rows(con, present[table]) if table in present else 0
        if n:
            sizes[table] = round_count(n)
    if "analysis_data" in present:
        sizes["analysis_data"] = round_count(tables.count_rows(con, present["analysis_data"]))
    return Catalog(cdm_version=CDM_VERSION, tables=sizes,
                   vocabularies=_vocabularies(con, present))


def _columns(con: Any, table: str) -> set[str]:
    """Lower-cased column names of a CDM table, as the engine describes an empty read."""
    result = con.execute(f"SELECT * FROM {table} LIMIT 0")
    description = result.description or []
    result.fetchall()
    return {str(d[0]).lower() for d in description}


def _vocabularies(con: Any, present: dict[str, str]) -> dict[str, list[str]]:
    """vocabulary_id -> sorted concept codes referenced by any clinical ``*_concept_id``."""
    if "concept" not in present:
        return {}
    used = [
        f"SELECT DISTINCT {c.name} AS concept_id FROM {table} WHERE {c.name} IS NOT NULL"
        for table, cols in TABLES.items()
        if table not in _VOCABULARY_TABLES and table in present
        for columns in [_columns(con, table)]
        for c in cols
        if c.name.endswith("_concept_id") and c.name in columns
    ]
    if not used:
        return {}
    rows = con.execute(
        f"""SELECT DISTINCT vocabulary_id, concept_code FROM concept
        WHERE concept_id IN ({" UNION ".join(used)})
        ORDER BY vocabulary_id, concept_code"""
    ).fetchall()
    out: dict[str, list[str]] = {}
    for vocabulary_id, code in rows:
        out.setdefault(str(vocabulary_id), []).append(str(code))
    return out


def state_path(store_path: str | Path) -> Path:
    """The node's SQLite state file, beside the store: ``node.duckdb`` -> ``node.state.sqlite``."""
    return Path(store_path).with_suffix(".state.sqlite")
