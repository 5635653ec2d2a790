"""Where a node's CDM lives: its own DuckDB store, or the data holder's PostgreSQL or Spark.

A :class:`StoreSpec` names the engine and where the CDM tables are; :func:`open_engine` opens
a read-only connection offering the subset of the DuckDB connection API the analyses use. The
analyses keep writing DuckDB SQL; the PostgreSQL and Spark adapters transpile each statement
with SQLGlot and keep every object they create session-temporary, so the node never writes
to the data holder's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from healthspace.core.errors import InvalidInput

Engine = Literal["duckdb", "postgresql", "spark"]
ENGINES: tuple[str, ...] = ("duckdb", "postgresql", "spark")


@dataclass(frozen=True)
class StoreSpec:
    """Which engine holds the node's CDM, and where.

    ``url`` is a libpq / SQLAlchemy URL for PostgreSQL and a Spark master URL for Spark
    (``local[2]`` in tests, ``spark://…`` in production). ``schema`` is the PostgreSQL schema or
    Spark database holding the CDM tables. ``parquet`` is a folder of ``<table>.parquet`` files
    (or ``<table>/`` folders) Spark registers as tables when no database is given.
    """

    engine: Engine = "duckdb"
    path: Path | None = None
    url: str | None = None
    schema: str | None = None
    parquet: Path | None = None

    def validate(self) -> StoreSpec:
        """Raise InvalidInput naming the field when the spec cannot describe a CDM."""
        from healthspace.cdm.engines.spec import validate_spec

        validate_spec(self)
        return self

    @property
    def label(self) -> str:
        """A short description for logs, never including a password."""
        from healthspace.cdm.engines.spec import describe

        return describe(self)


def open_engine(spec: StoreSpec) -> Any:
    """A read-only CDM connection for ``spec`` (DuckDB's own, or an adapter with its API)."""
    spec.validate()
    if spec.engine == "duckdb":
        from healthspace.cdm.store import open_store

        assert spec.path is not None
        return open_store(spec.path, read_only=True)
    if spec.engine == "postgresql":
        from healthspace.cdm.engines.postgres import open_postgres

        return open_postgres(spec)
    from healthspace.cdm.engines.spark import open_spark

    return open_spark(spec)


__all__ = ["ENGINES", "Engine", "InvalidInput", "StoreSpec", "open_engine"]
