"""Analysis datasets: a cohort turned into one row per person on the node, never leaving it.

``load_dataset`` validates a spec (docs/analysis-datasets.md); ``build_analysis_table``
materialises it as a session TEMP table (the CDM store stays read-only) for table analyses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from healthspace.cohort.compiler import CompiledQuery
from healthspace.cohort.dataset_models import COVARIATE_TYPES, NAME_PATTERN, DatasetSpec
from healthspace.cohort.dataset_sql import COHORT_TABLE, _quoted, compile_dataset
from healthspace.core.documents import load_document
from healthspace.core.errors import InvalidInput, field_path

if TYPE_CHECKING:  # analyses import this module; the context is only a type here
    from healthspace.analyses.base import LocalContext

__all__ = ["DatasetSpec", "build_analysis_table", "compile_dataset", "load_dataset"]


def _invalid(exc: ValidationError) -> InvalidInput:
    """The first problem, its path prefixed ``dataset``; covariate type tags are left out."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = list(first["loc"])
    # A discriminated union puts the chosen tag in the path: covariates.2.condition.window.
    if len(loc) > 2 and loc[0] == "covariates" and loc[2] in COVARIATE_TYPES:
        del loc[2]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("type")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidInput(f"{first['msg']}{more}", field=field_path(loc, ("dataset",)))


def _check_columns(spec: DatasetSpec) -> None:
    seen: dict[str, str] = {}
    for path, name in spec.columns():
        if name in seen:
            raise InvalidInput(f"column name {name!r} is already used by {seen[name]}",
                               field=f"dataset.{path}")
        seen[name] = path
    if not seen:
        raise InvalidInput("give at least one covariate, an exposure or an outcome",
                           field="dataset")


_COMPILED: dict[str, CompiledQuery] = {}


def _compiled(spec: DatasetSpec, person_ids: bool = False) -> CompiledQuery:
    """Iterative analyses rebuild the table every round: compile each spec once per process."""
    key = f"{person_ids}:{spec.model_dump_json()}"
    if key not in _COMPILED:
        if len(_COMPILED) >= 32:
            _COMPILED.clear()
        _COMPILED[key] = compile_dataset(spec, person_ids=person_ids)
    return _COMPILED[key]


def load_dataset(raw: Any) -> DatasetSpec:
    """Validate a spec given as a dict, JSON/YAML text or a file path; errors name the field."""
    if isinstance(raw, DatasetSpec):
        return raw
    data = load_document(raw, "dataset") if isinstance(raw, str | Path) else raw
    if not isinstance(data, dict):
        raise InvalidInput("an analysis-dataset spec must be an object", field="dataset")
    try:
        spec = DatasetSpec.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    _check_columns(spec)
    return spec


def build_analysis_table(ctx: LocalContext, spec: DatasetSpec, table: str = "analysis_data",
                         *, person_ids: bool = False) -> int:
    """``CREATE OR REPLACE TEMP TABLE`` ``table`` from the task's cohort; returns its row count.

    The cohort comes from ``ctx.cohort_persons_sql()``, so consent is already applied. The
    table holds the spec's columns only: no dates, and no person_id unless ``person_ids``
    (a ``_person_id`` column for analyses that write results about persons on the node).
    """
    if not NAME_PATTERN.match(table):
        raise InvalidInput(f"unsafe table name {table!r}", field="table")
    if ctx.cohort is None:
        raise InvalidInput("an analysis dataset needs a cohort to start from", field="cohort")
    cohort_sql, cohort_params = ctx.cohort_persons_sql()
    con = ctx.con
    if ctx.registry is not None and ctx.registry.dataset_table is not None:
        return _from_registry(ctx, spec, table, ctx.registry.dataset_table, person_ids,
                              cohort_sql, cohort_params)
    compiled = _compiled(spec, person_ids)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {COHORT_TABLE} AS "
        f"SELECT c.person_id, c.index_date FROM ({cohort_sql}) AS c",
        cohort_params,
    )
    try:
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" AS {compiled.sql}', compiled.params)
    finally:
        con.execute(f"DROP TABLE IF EXISTS temp.{COHORT_TABLE}")
    row = con.execute(f'SELECT COUNT(*) FROM temp."{table}"').fetchone()
    ctx.records_used = int(row[0]) if row else 0
    return ctx.records_used


def _from_registry(ctx: LocalContext, spec: DatasetSpec, table: str, rows: str,
                   person_ids: bool, cohort_sql: str, cohort_params: list[Any]) -> int:
    """The same table from a registry's materialised rows (computed by this spec on this
    store): the consented cohort's rows, in the compiled query's column and row order."""
    columns = ", ".join(f"d.{_quoted(name)}" for _, name in spec.columns())
    if person_ids:
        columns = f"d.person_id AS _person_id, {columns}"
    ctx.con.execute(
        f'CREATE OR REPLACE TEMP TABLE "{table}" AS SELECT {columns} FROM temp.{rows} AS d '
        f"WHERE d.person_id IN (SELECT c.person_id FROM ({cohort_sql}) AS c) "
        "ORDER BY d.person_id", cohort_params)
    row = ctx.con.execute(f'SELECT COUNT(*) FROM temp."{table}"').fetchone()
    ctx.records_used = int(row[0]) if row else 0
    return ctx.records_used
