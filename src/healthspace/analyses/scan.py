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
from sqlglot.optimizer.scope import traverse_scope

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _tree_tables(tree: exp.Expr) -> list[exp.Table]:
    """The tables a parsed statement reads: SQLGlot's scopes resolve CTE names (a CTE may
    shadow a table it reads) and leave out what a statement only writes (CREATE, INSERT and
    DROP targets). A statement without scopes falls back to every non-CTE table name."""
    try:
        scopes = traverse_scope(tree)
    except sqlglot.errors.SqlglotError:
        scopes = []
    if scopes:
        return [source for scope in scopes for source in scope.sources.values()
                if isinstance(source, exp.Table)]
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return [t for t in tree.find_all(exp.Table) if t.name.lower() not in ctes]


@lru_cache(maxsize=512)
def table_references(sql: str) -> frozenset[tuple[str, str]]:
    """``(qualifier, name)`` of every table ``sql`` reads, lower-cased; the qualifier is the
    dotted catalog / schema path as written ("" when unqualified).

    A statement SQLGlot cannot parse falls back to every identifier in it, unqualified, which
    can only over-count against the store's table list, never miss a table.
    """
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return frozenset(("", word.lower()) for word in _WORD.findall(sql))
    refs: set[tuple[str, str]] = set()
    for tree in trees:
        if tree is None:
            continue
        for table in _tree_tables(tree):
            if table.name:
                path = ".".join(p for p in (table.catalog, table.db) if p)
                refs.add((path.lower(), table.name.lower()))
    return frozenset(refs)


def referenced_tables(sql: str) -> frozenset[str]:
    """Lower-cased names of the tables ``sql`` reads (CTE names and ``temp.`` tables excluded).

    A statement SQLGlot cannot parse falls back to every identifier in it, which can only
    over-count against the store's table list, never miss a table.
    """
    return frozenset(name for path, name in table_references(sql)
                     if path.split(".")[0] != "temp")


class MeteredConnection:
    """A DuckDB connection that records which store tables its statements read."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._tables: dict[str, str] | None = None  # lower name -> stored name
        self._database = ""  # the store's catalog (the connection's default database)
        self._rows: dict[str, int] = {}
        self.read: set[str] = set()

    def _store_tables(self) -> dict[str, str]:
        if self._tables is None:
            row = self._con.execute("SELECT current_database()").fetchone()
            self._database = str(row[0]) if row else ""
            rows = self._con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
                "AND schema_name = 'main' AND database_name = ?", [self._database]).fetchall()
            self._tables = {str(r[0]).lower(): str(r[0]) for r in rows}
        return self._tables

    def _temp_tables(self) -> set[str]:
        rows = self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        return {str(r[0]).lower() for r in rows}

    def _store_reads(self, query: str) -> set[str]:
        """The store tables ``query`` reads. An unqualified (or ``main.``) name resolves to a
        session temp table of that name when there is one, as DuckDB resolves it."""
        stored = self._store_tables()
        database = self._database.lower()
        default: set[str] = set()
        names: set[str] = set()
        for path, name in table_references(query):
            if name not in stored:
                continue
            if path in ("", "main"):
                default.add(name)
            elif path.split(".")[0] == database:
                names.add(name)
        if default:
            names |= default - self._temp_tables()
        return {stored[name] for name in names}

    def execute(self, query: str, parameters: Any = None) -> duckdb.DuckDBPyConnection:
        self.read |= self._store_reads(query)
        if parameters is None:
            return self._con.execute(query)
        return self._con.execute(query, parameters)

    def records_scanned(self) -> int:
        """Rows of every store table read so far (each table once)."""
        self._store_tables()
        database = self._database.replace('"', '""')
        for table in self.read - self._rows.keys():
            # Fully qualified: ``main.t`` would resolve to a temp table named ``t``.
            row = self._con.execute(
                f'SELECT count(*) FROM "{database}".main."{table}"').fetchone()
            self._rows[table] = int(row[0]) if row else 0
        return sum(self._rows[t] for t in self.read)

    def __getattr__(self, name: str) -> Any:  # everything else is the connection's own
        return getattr(self._con, name)
