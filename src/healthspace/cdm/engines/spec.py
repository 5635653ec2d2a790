"""Validation and description of a :class:`~healthspace.cdm.engines.StoreSpec`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from healthspace.core.errors import InvalidInput

if TYPE_CHECKING:
    from healthspace.cdm.engines import StoreSpec

# A schema / database name is an identifier: never quoted user text in SQL.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SPARK_MASTER = re.compile(r"^(local(\[(\d+|\*)(,\d+)?\])?|spark://\S+|yarn|k8s://\S+)$")


def validate_spec(spec: StoreSpec) -> None:
    """Check the fields each engine needs; errors name the field."""
    from healthspace.cdm.engines import ENGINES

    if spec.engine not in ENGINES:
        raise InvalidInput(f"unknown engine {spec.engine!r}; use one of {', '.join(ENGINES)}",
                           field="engine")
    if spec.schema is not None and not _IDENTIFIER.match(spec.schema):
        raise InvalidInput(f"schema {spec.schema!r} is not a plain SQL identifier "
                           f"(letters, digits, underscore)", field="schema")
    if spec.engine == "duckdb":
        _validate_duckdb(spec)
    elif spec.engine == "postgresql":
        _validate_postgres(spec)
    else:
        _validate_spark(spec)


def _validate_duckdb(spec: StoreSpec) -> None:
    if spec.path is None:
        raise InvalidInput("a DuckDB node needs its store file", field="path")
    for name in ("url", "schema", "parquet"):
        if getattr(spec, name) is not None:
            raise InvalidInput(f"{name} applies to the postgresql / spark engines, not duckdb",
                               field=name)


def _validate_postgres(spec: StoreSpec) -> None:
    if not spec.url:
        raise InvalidInput("a PostgreSQL node needs a connection URL "
                           "(postgresql://user@host:port/dbname)", field="url")
    scheme = urlsplit(spec.url).scheme
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise InvalidInput(f"the PostgreSQL URL must start with postgresql://, not {scheme!r}",
                           field="url")
    for name in ("path", "parquet"):
        if getattr(spec, name) is not None:
            raise InvalidInput(f"{name} does not apply to the postgresql engine", field=name)


def _validate_spark(spec: StoreSpec) -> None:
    if spec.url is not None and not _SPARK_MASTER.match(spec.url):
        raise InvalidInput(f"{spec.url!r} is not a Spark master URL "
                           f"(local[N], spark://host:port, yarn, k8s://…)", field="url")
    if spec.path is not None:
        raise InvalidInput("path is the DuckDB store file; a Spark node takes parquet or "
                           "schema", field="path")
    if spec.schema is None and spec.parquet is None:
        raise InvalidInput("a Spark node needs a database (schema) or a Parquet folder",
                           field="parquet")
    if spec.schema is not None and spec.parquet is not None:
        raise InvalidInput("give either a Spark database (schema) or a Parquet folder, "
                           "not both", field="parquet")
    if spec.parquet is not None and not spec.parquet.is_dir():
        raise InvalidInput(f"Parquet folder {spec.parquet} does not exist", field="parquet")


def describe(spec: StoreSpec) -> str:
    """``engine:location`` with any password in the URL masked."""
    if spec.engine == "duckdb":
        return f"duckdb:{spec.path}"
    where = spec.url or "local"
    if spec.engine == "postgresql" and spec.url:
        parts = urlsplit(spec.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            where = urlunsplit(parts._replace(netloc=netloc))
    target = spec.schema or (str(spec.parquet) if spec.parquet else "")
    return f"{spec.engine}:{where}/{target}"
