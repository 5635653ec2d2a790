"""A node's CDM in Spark SQL: a database of the data holder's metastore, or Parquet files.

Each adapter works in its own Spark session (``SparkSession.newSession``: shared cluster,
private temp views), so its temp views never meet another connection's. Spark has no bind
parameters: values go into the SQL as SQLGlot literal nodes (:mod:`.sql`). A session temp
table (``CREATE TEMP TABLE … AS``) becomes a temp view over a locally checkpointed DataFrame,
computed once and kept in executor memory, so later reads neither recompute it nor depend on
the temp views it was built from.

Iterative analyses rebuild the same analysis table every round. Spark pays seconds of planning
and job scheduling per build, so a built table is remembered for :data:`MEMO_SECONDS` under a
content key: its SQL (values inlined) and the keys of the temp tables it reads (a registered
frame's key is a hash of its rows). The same statement over the same inputs within that time
reuses the checkpointed result instead of recomputing it from the CDM.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from healthspace.cdm.engines.result import BOOLEAN, FLOAT, INTEGER, OTHER, Result, plain_value
from healthspace.cdm.engines.sql import Statement, UnsupportedStatement, translate
from healthspace.core.errors import HealthspaceError, InvalidInput

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

    from healthspace.cdm.engines import StoreSpec

DEFAULT_MASTER = "local[2]"
MEMO_SECONDS = 900.0  # a built temp table is reused this long (a study's rounds)
MEMO_ENTRIES = 8


class SparkEngineError(HealthspaceError):
    """Spark rejected a statement (its message, no JVM traceback)."""


def _kind(dtype: DataType) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return INTEGER
    if isinstance(dtype, T.DecimalType):
        return INTEGER if dtype.scale == 0 else FLOAT
    if isinstance(dtype, T.FloatType | T.DoubleType):
        return FLOAT
    if isinstance(dtype, T.BooleanType):
        return BOOLEAN
    return OTHER


def _spark_type(dtype: Any) -> DataType:
    from pyspark.sql import types as T

    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return T.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return T.DoubleType()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return T.TimestampType()
    return T.StringType()


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _message(exc: Exception) -> str:
    """The first line of a Spark error: the JVM stack trace stays out of results."""
    text = str(exc).strip().splitlines()
    return text[0][:2000] if text else type(exc).__name__


class SparkConnection:
    """The subset of the DuckDB connection API the analyses use, over one Spark session."""

    engine = "spark"
    dialect = "spark"

    def __init__(self, session: SparkSession, database: str | None,
                 cdm_views: Iterable[str] = ()) -> None:
        self._spark = session
        self.database = database
        self._cdm_views = {v.lower(): v for v in cdm_views}  # Parquet tables as temp views
        self._temps: dict[str, DataFrame | None] = {}  # our temp views (lower name)
        self._keys: dict[str, str] = {}  # temp view (lower name) -> content key
        self._memo: OrderedDict[str, tuple[float, DataFrame]] = OrderedDict()

    # --- statements -------------------------------------------------------------------

    def execute(self, query: str, parameters: Sequence[Any] | None = None) -> Result:
        statement = translate(query, parameters, self.dialect, set(self._temps))
        from pyspark.errors import PySparkException

        try:
            return self._run(statement)
        except PySparkException as exc:
            raise SparkEngineError(f"Spark: {_message(exc)}") from None

    def executemany(self, query: str, parameters: Iterable[Sequence[Any]]) -> None:
        for row in parameters:
            self.execute(query, row)

    def _run(self, st: Statement) -> Result:
        if st.kind == "query":
            return self._result(self._spark.sql(st.sql))
        assert st.table is not None
        if st.kind == "drop_temp":
            self._drop(st.table)
        elif st.kind == "create_temp":
            if st.sql.upper().startswith("CREATE"):
                raise UnsupportedStatement("Spark temp tables are created from a query "
                                           "(CREATE TEMP TABLE … AS SELECT)")
            if st.table.lower() in self._temps and not st.replace:
                raise SparkEngineError(f"temp table {st.table} already exists")
            key = _key(st.sql, *sorted(f"{t}={self._keys.get(t, '?')}" for t in st.reads_temp))
            self._keep(st.table, self._built(key, st.sql), key)
        else:
            raise UnsupportedStatement("Spark temp views take no INSERT: create them from a "
                                       "query or register a frame")
        return Result([], [], [])

    def _built(self, key: str, query: str) -> DataFrame:
        """The checkpointed result of ``query``: remembered, or computed now."""
        now = time.monotonic()
        for old, (at, frame) in list(self._memo.items()):
            if now - at > MEMO_SECONDS:
                del self._memo[old]
                frame.unpersist()
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key][1]
        frame = self._spark.sql(query).localCheckpoint(eager=True)
        self._memo[key] = (now, frame)
        while len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)[1][1].unpersist()
        return frame

    def _keep(self, name: str, frame: DataFrame, key: str) -> None:
        self._drop(name)
        frame.createOrReplaceTempView(name)
        self._temps[name.lower()] = frame
        self._keys[name.lower()] = key

    def _drop(self, name: str) -> None:
        if name.lower() in self._cdm_views:
            raise UnsupportedStatement(f"{name} is a CDM table: the node never drops it")
        self._temps.pop(name.lower(), None)
        self._keys.pop(name.lower(), None)
        self._spark.catalog.dropTempView(name)  # a remembered result stays until it expires

    @staticmethod
    def _result(frame: DataFrame) -> Result:
        fields = frame.schema.fields
        rows = [tuple(plain_value(v) for v in row) for row in frame.collect()]
        return Result([f.name for f in fields], [_kind(f.dataType) for f in fields], rows)

    # --- frames and tables -------------------------------------------------------------

    def register(self, name: str, frame: pd.DataFrame) -> SparkConnection:
        """A pandas frame as session temp view ``name`` (typed even when empty)."""
        from pyspark.sql import types as T

        schema = T.StructType([T.StructField(str(c), _spark_type(t), True)
                               for c, t in frame.dtypes.items()])
        rows = [[None if pd.isna(v) else plain_value(v) for v in row]
                for row in frame.itertuples(index=False, name=None)]
        self._keep(name, self._spark.createDataFrame(rows, schema=schema),
                   _key(schema.json(), repr(rows)))
        return self

    def unregister(self, name: str) -> SparkConnection:
        self._drop(name)
        return self

    def store_tables(self) -> dict[str, str]:
        """Lower-cased name -> name of every CDM table: the database's, or the Parquet views."""
        if self.database is None:
            return dict(self._cdm_views)
        tables = self._spark.catalog.listTables(self.database)
        return {t.name.lower(): t.name for t in tables if not t.isTemporary}

    def temp_tables(self) -> set[str]:
        return set(self._temps)

    def count_rows(self, table: str) -> int:
        """Rows of a CDM table: the database's, or the Parquet view (never a temp view)."""
        if self.database is None:
            frame = self._spark.table(self._cdm_views[table.lower()])
        else:
            frame = self._spark.table(f"`{self.database}`.`{table}`")
        return int(frame.count())

    def close(self) -> None:
        """Drop this session's temp views (the shared Spark context keeps running)."""
        for name in list(self._temps):
            self._drop(name)
        while self._memo:
            self._memo.popitem()[1][1].unpersist()
        for name in self._cdm_views.values():
            self._spark.catalog.dropTempView(name)

    def __enter__(self) -> SparkConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parquet_tables(folder: Path) -> dict[str, Path]:
    """``<table>.parquet`` files and ``<table>/`` folders of Parquet parts, by table name."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix == ".parquet":
            found[entry.stem.lower()] = entry
        elif entry.is_dir() and any(entry.glob("*.parquet")):
            found[entry.name.lower()] = entry
    return found


def spark_session(master: str = DEFAULT_MASTER) -> SparkSession:
    """The process's Spark session for ``master`` (created on first use)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - pyspark is a dependency
        raise InvalidInput("the spark engine needs pyspark installed", field="engine") from exc
    return (SparkSession.builder.master(master).appName("healthspace-node")
            .config("spark.ui.showConsoleProgress", "false").getOrCreate())


def open_spark(spec: StoreSpec) -> SparkConnection:
    """A new Spark session on the cluster; the CDM from the database or the Parquet folder."""
    from pyspark.errors import PySparkException

    try:
        session = spark_session(spec.url or DEFAULT_MASTER).newSession()
    except PySparkException as exc:
        raise InvalidInput(f"cannot start Spark: {_message(exc)}", field="url") from None
    session.conf.set("spark.sql.session.timeZone", "UTC")
    if spec.schema is not None:
        if not session.catalog.databaseExists(spec.schema):
            raise InvalidInput(f"Spark database {spec.schema!r} does not exist", field="schema")
        session.catalog.setCurrentDatabase(spec.schema)
        adapter = SparkConnection(session, spec.schema)
    else:
        assert spec.parquet is not None
        tables = _parquet_tables(spec.parquet)
        for name, path in tables.items():
            session.read.parquet(str(path)).createOrReplaceTempView(name)
        adapter = SparkConnection(session, None, tables)
    if "person" not in adapter.store_tables():
        adapter.close()
        field = "schema" if spec.schema is not None else "parquet"
        raise InvalidInput("the Spark CDM holds no OMOP person table", field=field)
    return adapter


__all__ = ["SparkConnection", "SparkEngineError", "open_spark", "spark_session"]
