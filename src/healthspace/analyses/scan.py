"""Records scanned: which stored tables a task's queries read, and how many rows they hold.

The metered connection wraps the node's read-only CDM connection (DuckDB, PostgreSQL or
Spark, see :mod:`healthspace.cdm.engines`) for one task. Each statement is parsed (SQLGlot,
DuckDB dialect: the analyses' own SQL, before any transpiling) for the tables it references;
the store's own tables among them (never session temp tables such as the consent filter or a
built analysis dataset) are counted once per task, at their full row count. So "records
scanned" is a deterministic, engine-independent figure: what a full read of every table the
task touched would cover, whatever pruning the engine managed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from healthspace.cdm.engines import tables

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
    """A CDM connection (DuckDB, or an engine adapter) recording which store tables its
    statements read; the table listing and row counts come from :mod:`healthspace.cdm.engines
    .tables`, so the figure is the same on every engine holding the same data."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self._tables: dict[str, str] | None = None  # lower name -> stored name
        self._qualifiers: set[str] = set()  # qualifiers naming the store's tables
        self._rows: dict[str, int] = {}
        self.read: set[str] = set()

    def _store_tables(self) -> dict[str, str]:
        if self._tables is None:
            self._qualifiers = tables.store_qualifiers(self._con)
            self._tables = tables.store_tables(self._con)
        return self._tables

    def _store_reads(self, query: str) -> set[str]:
        """The store tables ``query`` reads. A bare name resolves to a session temp table of
        that name when there is one, as every engine resolves it."""
        stored = self._store_tables()
        default: set[str] = set()
        names: set[str] = set()
        for path, name in table_references(query):
            if name not in stored:
                continue
            if path == "" or (path == "main" and tables.is_duckdb(self._con)):
                default.add(name)
            elif path in self._qualifiers:
                names.add(name)
        if default:
            names |= default - tables.temp_tables(self._con)
        return {stored[name] for name in names}

    def execute(self, query: str, parameters: Any = None) -> Any:
        self.read |= self._store_reads(query)
        if parameters is None:
            return self._con.execute(query)
        return self._con.execute(query, parameters)

    def records_scanned(self) -> int:
        """Rows of every store table read so far (each table once)."""
        self._store_tables()
        for table in self.read - self._rows.keys():
            self._rows[table] = tables.count_rows(self._con, table)
        return sum(self._rows[t] for t in self.read)

    def __getattr__(self, name: str) -> Any:  # everything else is the connection's own
        return getattr(self._con, name)
