"""Copy a DuckDB node store into PostgreSQL or Parquet: a data holder's database for tests,
demos and benchmarks (a real data holder's CDM is already there; the node reads it in place).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from healthspace.cdm.engines.postgres import libpq_url
from healthspace.cdm.schema import TABLES

# DuckDB column types as PostgreSQL spells them.
_PG_TYPES = {"BIGINT": "BIGINT", "INTEGER": "INTEGER", "DOUBLE": "DOUBLE PRECISION",
             "DATE": "DATE", "TIMESTAMP": "TIMESTAMP", "VARCHAR": "TEXT"}


def copy_to_postgres(store: duckdb.DuckDBPyConnection, url: str, schema: str = "cdm") -> int:
    """Create ``schema`` and one table per CDM table of the store, filled by COPY FROM STDIN;
    returns the rows copied. The schema must not exist yet."""
    import psycopg
    from psycopg import sql as pgsql

    copied = 0
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        for table, columns in TABLES.items():
            target = pgsql.Identifier(schema, table)
            cols = pgsql.SQL(", ").join(
                pgsql.SQL("{} {}{}").format(pgsql.Identifier(c.name), pgsql.SQL(_PG_TYPES[c.type]),
                                           pgsql.SQL(" NOT NULL" if c.required else ""))
                for c in columns)
            conn.execute(pgsql.SQL("CREATE TABLE {} ({})").format(target, cols))
            names = [c.name for c in columns]
            result = store.execute(f"SELECT {', '.join(names)} FROM main.{table}")
            with conn.cursor().copy(pgsql.SQL("COPY {} ({}) FROM STDIN").format(
                    target, pgsql.SQL(", ").join(map(pgsql.Identifier, names)))) as copy:
                while batch := result.fetchmany(10_000):
                    for row in batch:
                        copy.write_row(row)
                    copied += len(batch)
        conn.execute(pgsql.SQL("ANALYZE"))
    return copied


def export_parquet(store: duckdb.DuckDBPyConnection, folder: Path) -> list[Path]:
    """Write every CDM table of the store as ``<table>.parquet`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in TABLES:
        path = folder / f"{table}.parquet"
        escaped = str(path).replace("'", "''")
        store.execute(f"COPY main.{table} TO '{escaped}' (FORMAT parquet)")
        written.append(path)
    return written
