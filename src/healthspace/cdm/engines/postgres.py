"""A node's CDM in the data holder's PostgreSQL, read in place through psycopg 3.

Every query runs in a ``READ ONLY`` transaction; the only statements that write are those
creating, filling or dropping the session's own TEMP tables (``pg_temp``), which PostgreSQL
drops when the session ends. ``search_path`` is set to the CDM schema, so the analyses' bare
table names resolve there (after ``pg_temp``, as DuckDB resolves temp tables first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
from psycopg import sql as pgsql

from healthspace.cdm.engines.result import BOOLEAN, FLOAT, INTEGER, OTHER, Result, plain_value
from healthspace.cdm.engines.sql import Statement, UnsupportedStatement, translate
from healthspace.core.errors import HealthspaceError, InvalidInput

if TYPE_CHECKING:
    from healthspace.cdm.engines import StoreSpec

_INTEGER_OIDS = {20, 21, 23, 26}  # int8, int2, int4, oid
_FLOAT_OIDS = {700, 701}
_NUMERIC_OID = 1700
_BOOL_OID = 16


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as libpq takes it (``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def _kind(oid: int, values: Iterable[Any]) -> str:
    if oid in _INTEGER_OIDS:
        return INTEGER
    if oid in _FLOAT_OIDS:
        return FLOAT
    if oid == _BOOL_OID:
        return BOOLEAN
    if oid == _NUMERIC_OID:  # SUM(bigint) is NUMERIC: integral values stay integers
        return FLOAT if any(isinstance(v, float) for v in values) else INTEGER
    return OTHER


def _pg_type(dtype: Any) -> str:
    """The temp-table column type for a registered frame's column."""
    if pd.api.types.is_bool_dtype(dtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(dtype):
        return "BIGINT"
    if pd.api.types.is_float_dtype(dtype):
        return "DOUBLE PRECISION"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "TIMESTAMP"
    return "TEXT"


class PostgresConnection:
    """The subset of the DuckDB connection API the analyses use, over one psycopg session."""

    engine = "postgresql"
    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self._conn = conn
        self.schema = schema
        self._temps: set[str] = set()

    # --- statements -------------------------------------------------------------------

    def execute(self, query: str, parameters: Sequence[Any] | None = None) -> Result:
        statement = translate(query, parameters, self.dialect, self._temps)
        try:
            return self._run(statement)
        except psycopg.Error as exc:
            raise EngineError(f"PostgreSQL: {str(exc).strip()}") from None

    def executemany(self, query: str, parameters: Iterable[Sequence[Any]]) -> None:
        for row in parameters:
            self.execute(query, row)

    def _run(self, st: Statement) -> Result:
        if st.kind == "query":
            with self._conn.transaction():
                cur = psycopg.RawCursor(self._conn)
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(st.sql, st.params or None)
                return self._result(cur)
        assert st.table is not None
        table = pgsql.Identifier("pg_temp", st.table)
        cur = psycopg.RawCursor(self._conn)
        if st.kind == "drop_temp":
            cur.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(table).as_string(cur))
            self._temps.discard(st.table.lower())
        elif st.kind == "create_temp":
            self._create_temp(cur, st)
        else:
            cur.execute(st.sql, st.params or None)
        return Result([], [], [])

    def _create_temp(self, cur: psycopg.RawCursor[Any], st: Statement) -> None:
        assert st.table is not None
        if st.replace:
            cur.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(
                pgsql.Identifier("pg_temp", st.table)).as_string(cur))
        if st.sql.upper().startswith("CREATE"):  # a column list: rendered whole
            cur.execute(st.sql, st.params or None)
        else:
            head = pgsql.SQL("CREATE TEMP TABLE {} AS ").format(pgsql.Identifier(st.table))
            cur.execute(head.as_string(cur) + st.sql, st.params or None)
        self._temps.add(st.table.lower())

    @staticmethod
    def _result(cur: psycopg.RawCursor[Any]) -> Result:
        if cur.description is None:
            return Result([], [], [])
        rows = [tuple(plain_value(v) for v in row) for row in cur.fetchall()]
        columns = [c.name for c in cur.description]
        kinds = [_kind(c.type_code, (r[i] for r in rows)) for i, c in enumerate(cur.description)]
        return Result(columns, kinds, rows)

    # --- frames and tables -------------------------------------------------------------

    def register(self, name: str, frame: pd.DataFrame) -> PostgresConnection:
        """Copy a pandas frame into a session temp table ``name`` (DuckDB registers a view)."""
        cur = self._conn.cursor()
        table = pgsql.Identifier("pg_temp", name)
        cur.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(table))
        columns = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(str(c)), pgsql.SQL(_pg_type(t)))
            for c, t in frame.dtypes.items())
        cur.execute(pgsql.SQL("CREATE TEMP TABLE {} ({})").format(
            pgsql.Identifier(name), columns))
        with cur.copy(pgsql.SQL("COPY {} FROM STDIN").format(table)) as copy:
            for row in frame.itertuples(index=False, name=None):
                copy.write_row([None if pd.isna(v) else plain_value(v) for v in row])
        self._temps.add(name.lower())
        return self

    def unregister(self, name: str) -> PostgresConnection:
        self._conn.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(
            pgsql.Identifier("pg_temp", name)))
        self._temps.discard(name.lower())
        return self

    def store_tables(self) -> dict[str, str]:
        """Lower-cased name -> name of every table or view in the CDM schema."""
        rows = self._read("SELECT table_name FROM information_schema.tables "
                          "WHERE table_schema = %s", [self.schema])
        return {str(r[0]).lower(): str(r[0]) for r in rows}

    def temp_tables(self) -> set[str]:
        return set(self._temps)

    def count_rows(self, table: str) -> int:
        """Rows of a CDM table (schema-qualified: never a temp table of that name)."""
        query = pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(self.schema, table))
        rows = self._read(query, [])
        return int(rows[0][0]) if rows else 0

    def _read(self, query: str | pgsql.Composed, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._conn.transaction():
            cur = self._conn.cursor()
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(query, args or None)
            return list(cur.fetchall())

    @property
    def broken(self) -> bool:
        """The session is gone (server restart, network): the node opens a new one."""
        return bool(self._conn.broken or self._conn.closed)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PostgresConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EngineError(HealthspaceError):
    """The data holder's engine rejected a statement (its message, no traceback)."""


def open_postgres(spec: StoreSpec) -> PostgresConnection:
    """Connect, set ``search_path`` to the CDM schema and check it holds a ``person`` table."""
    assert spec.url is not None
    schema = spec.schema or "public"
    try:
        conn = psycopg.connect(libpq_url(spec.url), autocommit=True,
                               application_name="healthspace-node")
    except psycopg.Error as exc:
        raise InvalidInput(f"cannot connect to PostgreSQL: {str(exc).strip()}",
                           field="url") from None
    conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
    adapter = PostgresConnection(conn, schema)
    if "person" not in adapter.store_tables():
        adapter.close()
        raise InvalidInput(f"PostgreSQL schema {schema!r} holds no OMOP CDM person table "
                           f"(or this role cannot see it)", field="schema")
    return adapter


__all__ = ["EngineError", "PostgresConnection", "UnsupportedStatement", "open_postgres"]
