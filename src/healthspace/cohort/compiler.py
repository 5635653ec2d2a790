"""Compile a CohortDefinition to one parameterised SQL query built from SQLGlot expressions."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from sqlglot import exp

from healthspace.cdm.schema import DOMAINS, GENDER_CONCEPTS
from healthspace.cohort.models import (
    EVENT_KINDS,
    AgeRange,
    CohortDefinition,
    Criterion,
    EventCriterion,
    EventFilter,
    ObservationPeriodCriterion,
    ValueFilter,
)

# DB-API paramstyle of the rendered SQL: "qmark" (``?``) for DuckDB, SQLite, Trino, Spark;
# "format" (``%s``, as psycopg expects) for PostgreSQL. The SQL text holds no other ``%``.
PARAMSTYLES = {"postgres": "format"}

_MARK = "hs_p"  # named placeholders while building; the rendered SQL has anonymous ones
_VALUE_OPS: dict[str, type[exp.Binary]] = {
    "gt": exp.GT,
    "gte": exp.GTE,
    "lt": exp.LT,
    "lte": exp.LTE,
    "eq": exp.EQ,
}


@dataclass(frozen=True)
class CompiledQuery:
    """SQL returning ``person_id, index_date`` (one row per person) and its positional params."""

    sql: str
    params: list[Any]
    dialect: str = "duckdb"

    @property
    def paramstyle(self) -> str:
        return PARAMSTYLES.get(self.dialect, "qmark")


def _col(name: str, table: str) -> exp.Column:
    return exp.column(name, table=table)


def _table(name: str, alias: str) -> exp.Table:
    return exp.Table(
        this=exp.to_identifier(name), alias=exp.TableAlias(this=exp.to_identifier(alias))
    )


def _escape_like(code: str) -> str:
    """Keep ``%`` as the only wildcard: ``_`` and the escape character are literal."""
    return code.replace("\\", "\\\\").replace("_", "\\_")


def _select(*columns: exp.Expr, source: exp.Expr) -> exp.Select:
    return exp.Select(expressions=list(columns)).from_(source, copy=False)


def _split_code(code: str) -> tuple[str, str]:
    vocab, _, value = code.partition(":")
    return vocab, value


@dataclass
class _Builder:
    """Accumulates CTEs and parameter values while the query tree is built."""

    values: dict[str, Any] = field(default_factory=dict)
    ctes: list[tuple[str, exp.Query, bool | None]] = field(default_factory=list)

    def param(self, value: Any, cast: str | None = None) -> exp.Expr:
        name = f"{_MARK}{len(self.values)}"
        self.values[name] = value
        node = exp.Placeholder(this=name)
        # Casts give PostgreSQL a type for the parameter and DuckDB DATE + INTEGER arithmetic.
        return exp.cast(node, cast) if cast else node

    def cte(self, prefix: str, query: exp.Query, materialized: bool | None = None) -> str:
        name = f"{prefix}_{len(self.ctes)}"
        self.ctes.append((name, query, materialized))
        return name

    # --- concept sets -------------------------------------------------------------

    def _values(
        self, rows: list[tuple[Any, ...]], columns: list[str], cast: str | None
    ) -> exp.Values:
        tuples = [exp.Tuple(expressions=[self.param(v, cast) for v in row]) for row in rows]
        return exp.values(tuples, alias="q", columns=columns)

    def _concept_lookup(self, rows: list[tuple[str, str]], wildcard: bool) -> exp.Select:
        """Concept ids whose (vocabulary_id, concept_code) equals / is LIKE a requested pair."""
        key = "pattern" if wildcard else "concept_code"
        code: exp.Expr = _col("concept_code", "c").eq(_col(key, "q"))
        if wildcard:
            like = exp.Like(this=_col("concept_code", "c"), expression=_col(key, "q"))
            code = exp.Escape(this=like, expression=exp.Literal.string("\\"))
        on = exp.and_(_col("vocabulary_id", "c").eq(_col("vocabulary_id", "q")), code, copy=False)
        values = self._values(list(rows), ["vocabulary_id", key], None)
        return _select(_col("concept_id", "c"), source=_table("concept", "c")).join(
            values, on=on, copy=False
        )

    def concept_set(self, spec: EventFilter) -> str:
        """CTE of concept ids: ``codes`` via ``concept``, ``concepts`` plus their descendants."""
        pairs = [_split_code(c) for c in spec.codes]
        exact = [(v, c) for v, c in pairs if "%" not in c]
        like = [(v, _escape_like(c)) for v, c in pairs if "%" in c]
        parts: list[exp.Select] = []
        if exact:
            parts.append(self._concept_lookup(exact, wildcard=False))
        if like:
            parts.append(self._concept_lookup(like, wildcard=True))
        if spec.concepts:
            ids = [(i,) for i in spec.concepts]
            own = self._values(ids, ["concept_id"], "BIGINT")
            parts.append(_select(_col("concept_id", "q"), source=own))
            below = _col("ancestor_concept_id", "ca").eq(_col("concept_id", "q"))
            parts.append(
                _select(
                    _col("descendant_concept_id", "ca"), source=_table("concept_ancestor", "ca")
                ).join(self._values(ids, ["concept_id"], "BIGINT"), on=below, copy=False)
            )
        query: exp.Query = parts[0]
        for part in parts[1:]:
            query = exp.union(query, part, distinct=True, copy=False)
        return self.cte("concepts", query, materialized=True)

    # --- events ---------------------------------------------------------------------

    def events(self, kind: str, spec: EventFilter) -> str:
        """CTE ``(person_id, event_date)`` of qualifying events, each event row exactly once.

        A UNION ALL of two semi-joins (concept in set; else source concept in set) rather than
        ``a IN (..) OR b IN (..)``: DuckDB runs semi/anti joins far faster than OR-ed mark joins.
        """
        table, concept_col, source_col, date_col = DOMAINS[kind]
        concepts = self.concept_set(spec)

        def branch(*preds: exp.Expr) -> exp.Select:
            return _select(
                _col("person_id", "e"),
                _col(date_col, "e").as_("event_date", copy=False),
                source=_table(table, "e"),
            ).where(*preds, *self.value_filters(spec.value), copy=False)

        def member(col: str) -> exp.Expr:
            subquery = _select(exp.column("concept_id"), source=exp.to_table(concepts))
            return _col(col, "e").isin(query=subquery, copy=False)

        # NOT EXISTS, not NOT IN: a NULL standard concept still counts via its source concept.
        standard_missed = exp.not_(
            exp.Exists(
                this=_select(exp.Literal.number(1), source=_table(concepts, "x")).where(
                    _col("concept_id", "x").eq(_col(concept_col, "e")), copy=False
                )
            )
        )
        query = exp.union(
            branch(member(concept_col)),
            branch(member(source_col), standard_missed),
            distinct=False,
            copy=False,
        )
        return self.cte("events", query)

    def value_filters(self, value: ValueFilter | None) -> list[exp.Expr]:
        if value is None:
            return []
        number = _col("value_as_number", "e")
        return [
            _VALUE_OPS[op](this=number.copy(), expression=self.param(v, "DOUBLE"))
            for op, v in value.ops()
        ]

    def entry(self, kind: str, spec: EventFilter) -> str:
        """CTE ``(person_id, index_date)``: each person's earliest qualifying entry event."""
        events = self.events(kind, spec)
        first = exp.Min(this=_col("event_date", "ev")).as_("index_date", copy=False)
        query = _select(_col("person_id", "ev"), first, source=_table(events, "ev")).group_by(
            _col("person_id", "ev"), copy=False
        )
        return self.cte("index_events", query, materialized=True)

    # --- criteria -------------------------------------------------------------------

    def event_criterion(self, kind: str, spec: EventCriterion, entry: str) -> exp.Expr:
        events = self.events(kind, spec)
        event_date, index_date = _col("event_date", "ev"), _col("index_date", "en")
        start, end = spec.window
        window: list[exp.Expr] = []
        if start is not None:
            window.append(event_date.copy() >= index_date.copy() + self.param(start, "INTEGER"))
        if end is not None:
            window.append(event_date.copy() <= index_date.copy() + self.param(end, "INTEGER"))
        at_least = exp.Count(this=exp.Star()) >= self.param(spec.occurrences.min, "BIGINT")
        query = (
            _select(_col("person_id", "en"), source=_table(entry, "en"))
            .join(_table(events, "ev"), on=_same_person("ev"), copy=False)
            .where(*window, copy=False)
            .group_by(_col("person_id", "en"), copy=False)
            .having(at_least, copy=False)
        )
        return _in_cte(self.cte("criterion", query))

    def observation(self, spec: ObservationPeriodCriterion, entry: str) -> exp.Expr:
        index_date = _col("index_date", "en")
        earliest_start = index_date.copy() - self.param(spec.min_prior_observation_days, "INTEGER")
        query = (
            _select(_col("person_id", "en"), source=_table(entry, "en"))
            .join(_table("observation_period", "op"), on=_same_person("op"), copy=False)
            .where(
                _col("observation_period_start_date", "op") <= earliest_start,
                _col("observation_period_end_date", "op") >= index_date.copy(),
                copy=False,
            )
        )
        return _in_cte(self.cte("criterion", query))

    def age(self, spec: AgeRange) -> exp.Expr:
        age = exp.paren(exp.Year(this=_col("index_date", "en")) - _col("year_of_birth", "p"))
        bounds: list[exp.Expr] = []
        if spec.min is not None:
            bounds.append(age.copy() >= self.param(spec.min, "INTEGER"))
        if spec.max is not None:
            bounds.append(age.copy() <= self.param(spec.max, "INTEGER"))
        return exp.paren(exp.and_(*bounds, copy=False)) if bounds else exp.true()

    def sex(self, sex: str) -> exp.Expr:
        # COALESCE: an unknown gender is "not F", so NOT(...) in an exclusion keeps the person.
        same = _col("gender_concept_id", "p").eq(self.param(GENDER_CONCEPTS[sex], "BIGINT"))
        return exp.Coalesce(this=same, expressions=[exp.false()])

    def criterion(self, c: Criterion, entry: str) -> exp.Expr:
        kind = c.kind
        if kind in EVENT_KINDS:
            return self.event_criterion(kind, getattr(c, kind), entry)
        if c.observation_period is not None:
            return self.observation(c.observation_period, entry)
        if c.age is not None:
            return self.age(c.age)
        if c.sex is not None:
            return self.sex(c.sex)
        assert c.any is not None
        return exp.paren(exp.or_(*(self.criterion(sub, entry) for sub in c.any), copy=False))


def _in_cte(name: str) -> exp.Expr:
    subquery = _select(exp.column("person_id"), source=exp.to_table(name))
    return _col("person_id", "en").isin(query=subquery, copy=False)


def _same_person(alias: str) -> exp.Expr:
    return _col("person_id", alias).eq(_col("person_id", "en"))


def _render(tree: exp.Expr, values: dict[str, Any], dialect: str) -> tuple[str, list[Any]]:
    """Swap our named markers for the dialect's positional placeholder, collecting params.

    SQLGlot does not generate nodes in text order (CTEs are prepended last), so the param
    order is read off the rendered text. Only our markers can match there: user values are
    never part of the SQL text, which holds just schema names, CTE names and markers.
    """
    named = tree.sql(dialect=dialect, copy=False)  # the tree is ours and used once
    before, _, after = exp.Placeholder(this=f"{_MARK}0").sql(dialect=dialect).partition(_MARK + "0")
    marker = re.compile(re.escape(before) + _MARK + r"(\d+)" + re.escape(after))
    positional = exp.Placeholder().sql(dialect=dialect)
    params: list[Any] = []

    def swap(match: re.Match[str]) -> str:
        params.append(values[_MARK + match.group(1)])
        return positional

    sql = marker.sub(swap, named)
    if len(params) != len(values) or _MARK in sql:
        raise RuntimeError("cohort compiler: placeholder bookkeeping is inconsistent")
    return sql, params


def compile_cohort(defn: CohortDefinition, dialect: str = "duckdb") -> CompiledQuery:
    """SQL selecting ``person_id, index_date`` for every person in the cohort at this node.

    Compiled queries are remembered (the last :data:`CACHE_SIZE`, by the definition's criteria
    and the dialect): an iterative analysis compiles its cohort again every round, and a node
    sees the same feasibility cohort from many consumers. A hit is a fresh copy.
    """
    key = (defn.model_dump_json(exclude={"name", "description"}), dialect)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is None:
        hit = _compile(defn, dialect)
        with _CACHE_LOCK:
            _CACHE[key] = hit
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return replace(hit, params=list(hit.params))


CACHE_SIZE = 256
_CACHE: OrderedDict[tuple[str, str], CompiledQuery] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _compile(defn: CohortDefinition, dialect: str) -> CompiledQuery:
    b = _Builder()
    entry = b.entry(defn.entry.kind, defn.entry.spec)
    where = [b.criterion(c, entry) for c in defn.inclusion]
    where += [exp.not_(b.criterion(c, entry), copy=False) for c in defn.exclusion]
    query = (
        _select(_col("person_id", "en"), _col("index_date", "en"), source=_table(entry, "en"))
        .distinct(copy=False)  # one row per person even if ``person`` repeats a person_id
        .join(
            _table("person", "p"), on=_col("person_id", "p").eq(_col("person_id", "en")), copy=False
        )
        .where(*where, copy=False)
        .order_by(_col("person_id", "en"), copy=False)
    )
    for name, cte, materialized in b.ctes:
        query = query.with_(name, as_=cte, materialized=materialized, copy=False)
    sql, params = _render(query, b.values, dialect)
    return CompiledQuery(sql=sql, params=params, dialect=dialect)
