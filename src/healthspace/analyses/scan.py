"""Records scanned: which stored tables a task's queries read, and how many rows they hold.

The metered connection wraps the node's read-only DuckDB connection for one task. Each
statement is parsed (SQLGlot, DuckDB dialect) for the tables it references; the store's own
tables among them (never session temp tables such as the consent filter or a built analysis
dataset) are counted once per task, at their full row count. So "records scanned" is a
deterministic, engine-independent figure: what a full read of every table the task touched
would cover, whatever pruning the engine managed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=512)
def referenced_tables(sql: str) -> frozenset[str]:
    """Lower-cased names of the tables ``sql`` reads (CTE names excluded).

    A statement SQLGlot cannot parse falls back to every identifier in it, which can only
    over-count against the store's table list, never miss a table.
    """
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return frozenset(word.lower() for word in _WORD.findall(sql))
    names: set[str] = set()
    for tree in trees:
        if tree is None:
            continue
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        names |= {t.name.lower() for t in tree.find_all(exp.Table)
                  if t.name and t.name.lower() not in ctes}
    return frozenset(names)


class MeteredConnection:
    """A DuckDB connection that records which store tables its statements read."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._tables: dict[str, str] | None = None  # lower name -> stored name
        self._rows: dict[str, int] = {}
        self.read: set[str] = set()

    def _store_tables(self) -> dict[str, str]:
        if self._tables is None:
            rows = self._con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
                "AND schema_name = 'main'").fetchall()
            self._tables = {str(r[0]).lower(): str(r[0]) for r in rows}
        return self._tables

    def execute(self, query: str, parameters: Any = None) -> duckdb.DuckDBPyConnection:
        stored = self._store_tables()
        for name in referenced_tables(query) & stored.keys():
            self.read.add(stored[name])
        if parameters is None:
            return self._con.execute(query)
        return self._con.execute(query, parameters)

    def records_scanned(self) -> int:
        """Rows of every store table read so far (each table once)."""
        for table in self.read - self._rows.keys():
            row = self._con.execute(f'SELECT count(*) FROM main."{table}"').fetchone()
            self._rows[table] = int(row[0]) if row else 0
        return sum(self._rows[t] for t in self.read)

    def __getattr__(self, name: str) -> Any:  # everything else is the connection's own
        return getattr(self._con, name)
