"""DuckDB SQL to another engine's SQL: parameters bound, ``temp.`` tables mapped, writes refused.

The analyses and the cohort compiler write DuckDB SQL with ``?`` placeholders. An adapter
hands each statement to :func:`translate`, which parses it once with SQLGlot and returns a
:class:`Statement`: what kind it is (a read, or the creation / removal of a session-temporary
table) and the engine's SQL for it. Parameters are never formatted into the text by hand: each
``?`` becomes a named SQLGlot placeholder first, then either the engine's own bind parameter
(PostgreSQL ``$n``, bound by the server) or a literal node built by ``exp.convert`` (Spark,
which has no bind parameters), so quoting is SQLGlot's generator's, never ours.

Anything but a query, a ``CREATE [OR REPLACE] TEMP TABLE``, a ``DROP TABLE`` of a session
temp table or an ``INSERT`` into one is refused: the node never writes the data holder's tables.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from healthspace.core.errors import HealthspaceError

Kind = Literal["query", "create_temp", "drop_temp", "insert_temp"]
_MARK = "hs_q"  # named placeholders replacing the ``?`` of the source text
TEMP_QUALIFIERS = frozenset({"temp", "pg_temp"})


class UnsupportedStatement(HealthspaceError):
    """A statement the read-only CDM connection does not run (a write, or unportable SQL)."""


@dataclass(frozen=True)
class Statement:
    """One translated statement. ``table`` is the temp table a create / drop / insert names;
    ``sql`` is the query (for a create: its ``AS`` query; for a column-list create: the full
    statement) in the target dialect; ``params`` the values the engine binds."""

    kind: Kind
    sql: str
    params: list[Any] = field(default_factory=list)
    table: str | None = None
    replace: bool = False
    if_exists: bool = False
    reads_temp: frozenset[str] = frozenset()  # the session temp tables it reads (lower)


@lru_cache(maxsize=1024)
def _named(sql: str) -> tuple[str, int]:
    """``sql`` with its i-th ``?`` token replaced by ``$hs_q<i>``, and how many there were.

    The tokenizer tells a placeholder from a ``?`` inside a string or comment, and numbering by
    text position keeps the binding right whatever order the generator writes nodes in.
    """
    tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(sql)
    marks = [t for t in tokens if t.token_type == TokenType.PLACEHOLDER and t.text == "?"]
    out, last = [], 0
    for i, token in enumerate(marks):
        out.append(sql[last:token.start])
        out.append(f"${_MARK}{i}")
        last = token.end + 1
    out.append(sql[last:])
    return "".join(out), len(marks)


@lru_cache(maxsize=512)
def _parse(sql: str) -> tuple[exp.Expr, int]:
    named, count = _named(sql)
    try:
        trees = [t for t in sqlglot.parse(named, read="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise UnsupportedStatement(f"cannot parse statement for transpiling: {exc}") from None
    if len(trees) != 1:
        raise UnsupportedStatement("one statement per execute() call")
    return trees[0], count


def _temp_name(table: exp.Table, temp_tables: set[str]) -> str | None:
    """The session temp table ``table`` names, or None when it may be a CDM table."""
    qualifier = (table.db or "").lower()
    if qualifier in TEMP_QUALIFIERS:
        return table.name
    if not qualifier and not table.catalog and table.name.lower() in temp_tables:
        return table.name
    return None


def _is_temporary(create: exp.Create) -> bool:
    props = create.args.get("properties")
    return bool(props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions))


def _classify(tree: exp.Expr, temp_tables: set[str]) -> tuple[Kind, str | None, exp.Expr]:
    """The statement's kind, the temp table it names, and the tree to render."""
    if isinstance(tree, exp.Query):
        return "query", None, tree
    if isinstance(tree, exp.Create) and tree.kind == "TABLE" and _is_temporary(tree):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        assert isinstance(target, exp.Table)
        body = tree.expression if isinstance(tree.expression, exp.Query) else tree
        return "create_temp", target.name, body
    dropped = tree.args.get("tables") or [tree.this] if isinstance(tree, exp.Drop) else []
    if isinstance(tree, exp.Drop) and tree.kind == "TABLE" and len(dropped) == 1:
        target = dropped[0]
        name = _temp_name(target, temp_tables) if isinstance(target, exp.Table) else None
        # A bare DROP IF EXISTS names a session table: the adapter qualifies it (pg_temp).
        if name is None and isinstance(target, exp.Table) and tree.args.get("exists") \
                and not target.db:
            name = target.name
        if name is not None:
            return "drop_temp", name, tree
    if isinstance(tree, exp.Insert):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if isinstance(target, exp.Table) and _temp_name(target, temp_tables) is not None:
            return "insert_temp", target.name, tree
    raise UnsupportedStatement(
        f"the node's CDM connection is read-only: {type(tree).__name__.upper()} statements "
        f"other than on session temp tables are not run")


def _bind(tree: exp.Expr, params: Sequence[Any], count: int, dialect: str) -> list[Any]:
    """Swap the named placeholders for the engine's parameters (in place); the bound values."""
    if len(params) != count:
        raise UnsupportedStatement(f"statement has {count} placeholders but {len(params)} "
                                   f"parameters were given")
    for node in list(tree.find_all(exp.Placeholder)):
        name = str(node.this or "")
        if not name.startswith(_MARK):
            raise UnsupportedStatement("only ? placeholders are supported")
        i = int(name[len(_MARK):])
        if dialect == "postgres":
            node.replace(exp.Parameter(this=exp.Literal.number(i + 1)))
        else:
            node.replace(literal(params[i]))
    return list(params) if dialect == "postgres" else []


def literal(value: Any) -> exp.Expr:
    """A SQLGlot literal node for a bound value (Spark has no bind parameters)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return exp.convert(value)
    if isinstance(value, int):
        return exp.Literal.number(int(value))
    if isinstance(value, float | decimal.Decimal):
        return exp.Literal.number(repr(float(value)))
    if isinstance(value, dt.datetime | dt.date):
        return exp.convert(value)
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[literal(v) for v in value])
    raise UnsupportedStatement(f"cannot bind a parameter of type {type(value).__name__}")


def _map_temp(tree: exp.Expr, dialect: str) -> None:
    """``temp.x`` -> ``pg_temp.x`` (PostgreSQL) or plain ``x`` (a Spark session temp view)."""
    for table in tree.find_all(exp.Table):
        if (table.db or "").lower() in TEMP_QUALIFIERS and not table.catalog:
            if dialect == "postgres":
                table.set("db", exp.to_identifier("pg_temp"))
            else:
                table.set("db", None)


def _spark_portable(tree: exp.Expr) -> None:
    """Spark SQL has no ``AS MATERIALIZED`` CTE hint; it plans CTEs itself."""
    for cte in tree.find_all(exp.CTE):
        if cte.args.get("materialized") is not None:
            cte.set("materialized", None)


def translate(sql: str, params: Sequence[Any] | None, dialect: str,
              temp_tables: set[str] | frozenset[str] = frozenset()) -> Statement:
    """Translate one DuckDB statement for ``dialect`` ("postgres" or "spark")."""
    tree, count = _parse(sql)
    tree = tree.copy()
    kind, table, body = _classify(tree, {t.lower() for t in temp_tables})
    replace = bool(tree.args.get("replace")) if kind == "create_temp" else False
    if kind == "create_temp":
        tree.set("replace", None)  # the adapter drops the old table itself
    if_exists = bool(tree.args.get("exists")) if kind in ("drop_temp", "create_temp") else False
    bound = _bind(body, list(params or []), count, dialect)
    temps = {t.lower() for t in temp_tables}
    reads = frozenset(
        t.name.lower() for t in body.find_all(exp.Table)
        if (t.db or "").lower() in TEMP_QUALIFIERS or (not t.db and t.name.lower() in temps))
    _map_temp(body, dialect)
    if dialect == "spark":
        _spark_portable(body)
    try:
        text = body.sql(dialect=dialect, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError as exc:
        raise UnsupportedStatement(f"statement not portable to {dialect}: {exc}") from None
    return Statement(kind, text, bound, table, replace, if_exists, reads)
