"""Which tables a CDM connection holds, whatever the engine: DuckDB's own or an adapter.

An engine adapter (:mod:`.postgres`, :mod:`.spark`) answers these itself; a DuckDB connection
is asked through its catalog functions. Store tables are the CDM's (the store file's ``main``
schema, the PostgreSQL schema, the Spark database or Parquet folder); temp tables are the
session's own (consent filter, a built analysis dataset).
"""

from __future__ import annotations

from typing import Any

import duckdb


def engine_name(con: Any) -> str:
    """``duckdb``, ``postgresql`` or ``spark``."""
    return str(getattr(con, "engine", "duckdb"))


def is_duckdb(con: Any) -> bool:
    return isinstance(con, duckdb.DuckDBPyConnection)


def _duckdb_database(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else ""


def store_tables(con: Any) -> dict[str, str]:
    """Lower-cased name -> stored name of every CDM table the connection reads."""
    if not is_duckdb(con):
        return dict(con.store_tables())
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
        "AND schema_name = 'main' AND database_name = ?", [_duckdb_database(con)]).fetchall()
    return {str(r[0]).lower(): str(r[0]) for r in rows}


def temp_tables(con: Any) -> set[str]:
    """Lower-cased names of the session's temp tables."""
    if not is_duckdb(con):
        return {t.lower() for t in con.temp_tables()}
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    return {str(r[0]).lower() for r in rows}


def store_qualifiers(con: Any) -> set[str]:
    """Lower-cased qualifiers that name the CDM's tables (``""`` is a bare table name)."""
    if is_duckdb(con):
        return {"", "main", _duckdb_database(con).lower(), f"{_duckdb_database(con)}.main"}
    name = getattr(con, "schema", None) or getattr(con, "database", None)
    return {"", str(name).lower()} if name else {""}


def count_rows(con: Any, table: str) -> int:
    """Rows of CDM table ``table``, fully qualified (never a temp table of the same name)."""
    if not is_duckdb(con):
        return int(con.count_rows(table))
    database = _duckdb_database(con).replace('"', '""')
    quoted = table.replace('"', '""')
    row = con.execute(f'SELECT count(*) FROM "{database}".main."{quoted}"').fetchone()
    return int(row[0]) if row else 0


def has_table(con: Any, name: str) -> bool:
    """Whether the connection sees table ``name``: a temp table or a CDM table."""
    lower = name.lower()
    return lower in temp_tables(con) or lower in store_tables(con)
