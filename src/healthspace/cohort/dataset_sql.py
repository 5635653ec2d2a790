"""Compile a DatasetSpec to one parameterised query over the cohort table (SQLGlot expressions).

The cohort compiler's builder supplies concept sets, qualifying events and windowed event
criteria, so codes, concepts and windows mean exactly what they mean in a cohort definition.
Every user value (codes, concept ids, window offsets, thresholds, group labels) is a
placeholder; column names from the spec are validated identifiers, quoted.
"""

from __future__ import annotations

from typing import get_args

from sqlglot import exp, parse_one

from healthspace.cdm.schema import GENDER_CONCEPTS
from healthspace.cohort.compiler import (
    CompiledQuery,
    _Builder,
    _col,
    _in_cte,
    _render,
    _same_person,
    _select,
    _table,
)
from healthspace.cohort.dataset_models import (
    NAME_PATTERN,
    AgeCovariate,
    CostAmount,
    CostCovariate,
    DatasetSpec,
    EventCovariate,
    Exposure,
    MeasurementCovariate,
    Outcome,
    SexCovariate,
    Window,
)
from healthspace.cohort.models import (
    EventCriterion,
    EventFilter,
    MeasurementCriterion,
    Occurrences,
)

# The cohort (person_id, index_date), materialised by the caller as a temp table.
COHORT_TABLE = "_hs_dataset_cohort"

# Completed years at index; month / day of birth from the columns, else from birth_datetime.
AGE_AT_INDEX = """YEAR(en.index_date) - p.year_of_birth - CASE
  WHEN MONTH(en.index_date) < COALESCE(p.month_of_birth, MONTH(p.birth_datetime)) THEN 1
  WHEN MONTH(en.index_date) = COALESCE(p.month_of_birth, MONTH(p.birth_datetime))
   AND DAY(en.index_date) < COALESCE(p.day_of_birth, DAY(p.birth_datetime)) THEN 1
  ELSE 0 END"""
_OBSERVATION = f"""SELECT en.person_id, MAX(op.observation_period_end_date) AS obs_end
FROM {COHORT_TABLE} AS en JOIN observation_period AS op ON op.person_id = en.person_id
WHERE op.observation_period_start_date <= en.index_date
  AND op.observation_period_end_date >= en.index_date
GROUP BY en.person_id"""
_DEATH = f"""SELECT d.person_id, MIN(d.death_date) AS death_date FROM death AS d
WHERE d.person_id IN (SELECT person_id FROM {COHORT_TABLE}) GROUP BY d.person_id"""
_DEATH_EVENTS = "SELECT d.person_id, d.death_date AS event_date FROM death AS d"
# Every visit cost row of a cohort person: its visit's start date and the cost amounts.
_VISIT_COSTS = f"""SELECT v.person_id, v.visit_start_date AS event_date,
  {", ".join(f"k.{c}" for c in get_args(CostAmount))}
FROM visit_occurrence AS v JOIN cost AS k
  ON k.cost_event_id = v.visit_occurrence_id AND k.cost_domain_id = 'Visit'
WHERE v.person_id IN (SELECT person_id FROM {COHORT_TABLE})"""


def _fixed(sql: str) -> exp.Expr:
    """A fragment of fixed SQL text: schema and CTE names only, never a user value."""
    return parse_one(sql, dialect="duckdb")


def _r(name: str) -> exp.Column:
    return exp.column(name, table="r")


def _case(cond: exp.Expr, then: exp.Expr, default: exp.Expr | None = None) -> exp.Case:
    case = exp.Case().when(cond, then, copy=False)
    return case.else_(default, copy=False) if default is not None else case


def _flag(cond: exp.Expr) -> exp.Expr:
    return exp.cast(_case(cond, exp.Literal.number(1), exp.Literal.number(0)), "INTEGER")


def _left_join(query: exp.Select, cte: str, alias: str) -> exp.Select:
    return query.join(_table(cte, alias), on=_same_person(alias), join_type="left", copy=False)


class _DatasetBuilder(_Builder):
    """The cohort builder plus per-person values: measurements, follow-up and outcomes."""

    def presence(self, kind: str, spec: EventFilter, window: Window, minimum: int = 1) -> exp.Expr:
        """``en.person_id IN (…)``: at least ``minimum`` matching events start in ``window``."""
        cls = MeasurementCriterion if kind == "measurement" else EventCriterion
        criterion = cls(codes=spec.codes, concepts=spec.concepts, value=spec.value,
                        window=window.bounds(), occurrences=Occurrences(min=minimum))
        return self.event_criterion(kind, criterion, COHORT_TABLE)

    def window(self, window: Window) -> list[exp.Expr]:
        event_date, index_date = _col("event_date", "ev"), _col("index_date", "en")
        start, end = window.bounds()
        preds: list[exp.Expr] = []
        if start is not None:
            preds.append(event_date.copy() >= index_date.copy() + self.param(start, "INTEGER"))
        if end is not None:
            preds.append(event_date.copy() <= index_date.copy() + self.param(end, "INTEGER"))
        return preds

    def measurement(self, cov: MeasurementCovariate) -> str:
        """CTE ``(person_id, v)``: the statistic of non-null values in the window."""
        events = self.events("measurement", cov)
        union = self.ctes[-1][1]  # the events CTE just added: two semi-join branches
        assert isinstance(union, exp.Union)
        for branch in (union.this, union.expression):
            assert isinstance(branch, exp.Select)
            branch.select(*(_col(c, "e") for c in ("value_as_number", "measurement_datetime",
                                                   "measurement_id")), copy=False)
        value = _col("value_as_number", "ev")
        source = (
            _select(_col("person_id", "en"), source=_table(COHORT_TABLE, "en"))
            .join(_table(events, "ev"), on=_same_person("ev"), copy=False)
            .where(*self.window(cov.window), value.copy().is_(exp.null()).not_(), copy=False)
        )
        if cov.stat in ("min", "max", "mean"):
            agg = {"min": exp.Min, "max": exp.Max, "mean": exp.Avg}[cov.stat](this=value)
            query = source.select(agg.as_("v"), copy=False).group_by(
                _col("person_id", "en"), copy=False
            )
            return self.cte("measure", query)
        # last / first: the latest / earliest date; same-day ties by datetime, id, then value.
        desc = cov.stat == "last"
        order = [exp.Ordered(this=_col(c, "ev"), desc=desc, nulls_first=False)
                 for c in ("event_date", "measurement_datetime", "measurement_id",
                           "value_as_number")]
        rank = exp.Window(this=exp.RowNumber(), partition_by=[_col("person_id", "en")],
                          order=exp.Order(expressions=order))
        ranked = source.select(value.as_("v"), rank.as_("rn"), copy=False)
        query = _select(exp.column("person_id"), exp.column("v"), source=ranked.subquery("m"))
        return self.cte("measure", query.where(exp.column("rn").eq(1), copy=False))

    def costs(self, cov: CostCovariate) -> str:
        """CTE ``(person_id, event_date, amount)``: the person's visit costs in the window."""
        if not any(name.startswith("visit_costs_") for name, _, _ in self.ctes):
            self.cte("visit_costs", _fixed(_VISIT_COSTS).assert_is(exp.Select))
        visits = next(name for name, _, _ in self.ctes if name.startswith("visit_costs_"))
        amount = _col(cov.amount, "ev")  # a Literal of schema column names, never user text
        query = (
            _select(_col("person_id", "en"), _col("event_date", "ev"), amount.as_("amount"),
                    source=_table(COHORT_TABLE, "en"))
            .join(_table(visits, "ev"), on=_same_person("ev"), copy=False)
            .where(*self.window(cov.window), amount.copy().is_(exp.null()).not_(), copy=False)
        )
        return self.cte("costs", query)

    def cost_total(self, cov: CostCovariate) -> str:
        """CTE ``(person_id, v)``: the sum of the person's visit costs in the window."""
        costs = self.costs(cov)
        query = _select(exp.column("person_id"), exp.Sum(this=exp.column("amount")).as_("v"),
                        source=exp.to_table(costs)).group_by(exp.column("person_id"), copy=False)
        return self.cte("cost_total", query)

    def outcome_events(self, outcome: Outcome) -> str:
        """CTE ``(person_id, event_date)`` of every outcome event (each kind, and death)."""
        parts: list[exp.Query] = [
            _select(exp.column("person_id"), exp.column("event_date"),
                    source=exp.to_table(self.events(kind, getattr(outcome, kind))))
            for kind in outcome.event_kinds()
        ]
        if outcome.death:
            parts.append(_fixed(_DEATH_EVENTS).assert_is(exp.Select))
        query = parts[0]
        for part in parts[1:]:
            query = exp.union(query, part, distinct=False, copy=False)
        return self.cte("outcome_events", query)

    def first_event(self, events: str, start: int) -> str:
        """CTE ``(person_id, first_date)``: the first outcome event on or after the window start."""
        since = _col("event_date", "ev") >= _col("index_date", "en") + self.param(start, "INTEGER")
        query = (
            _select(_col("person_id", "en"), exp.Min(this=_col("event_date", "ev")).as_(
                "first_date"), source=_table(COHORT_TABLE, "en"))
            .join(_table(events, "ev"), on=_same_person("ev"), copy=False)
            .where(since, copy=False)
            .group_by(_col("person_id", "en"), copy=False)
        )
        return self.cte("outcome_first", query)

    def prior_event(self, events: str, start: int) -> exp.Expr:
        """``en.person_id IN (…)``: an outcome event before the window start."""
        before = _col("event_date", "ev") < _col("index_date", "en") + self.param(start, "INTEGER")
        query = (
            _select(_col("person_id", "en"), source=_table(COHORT_TABLE, "en"))
            .join(_table(events, "ev"), on=_same_person("ev"), copy=False)
            .where(before, copy=False)
        )
        return _in_cte(self.cte("outcome_prior", query))


def _covariate_column(b: _DatasetBuilder, cov: object, query: exp.Select, i: int) -> exp.Expr:
    if isinstance(cov, AgeCovariate):
        return exp.cast(_fixed(AGE_AT_INDEX), "INTEGER")
    if isinstance(cov, SexCovariate):
        gender = _col("gender_concept_id", "p")
        return exp.cast(
            _case(gender.eq(GENDER_CONCEPTS["M"]), exp.Literal.number(1)).when(
                gender.copy().eq(GENDER_CONCEPTS["F"]), exp.Literal.number(0), copy=False),
            "INTEGER")
    if isinstance(cov, EventCovariate):
        return _flag(b.presence(cov.type, cov, cov.window, cov.occurrences.min))
    if isinstance(cov, CostCovariate):
        _left_join(query, b.cost_total(cov), f"m{i}")
        return _zero_if_null(_col("v", f"m{i}"))
    assert isinstance(cov, MeasurementCovariate)
    _left_join(query, b.measurement(cov), f"m{i}")
    return exp.cast(_col("v", f"m{i}"), "DOUBLE")


def _outcome_columns(b: _DatasetBuilder, outcome: Outcome, query: exp.Select) -> None:
    """Raw follow-up columns on the base rows; ``_finish`` turns them into event/duration."""
    index = _col("index_date", "en")
    start, end = outcome.window.start, outcome.window.end
    events = b.outcome_events(outcome)
    _left_join(query, b.cte("observation", _fixed(_OBSERVATION).assert_is(exp.Select)), "o")
    _left_join(query, b.first_event(events, start), "f")
    cols: list[exp.Expr] = [
        _col("obs_end", "o").as_("_obs_end"),
        (index.copy() + b.param(start, "INTEGER")).as_("_start"),
        _col("first_date", "f").as_("_first"),
    ]
    if end is not None:
        cols.append((index.copy() + b.param(end, "INTEGER")).as_("_wend"))
    if not outcome.death:  # death ends follow-up unless it is itself an outcome
        _left_join(query, b.cte("death", _fixed(_DEATH).assert_is(exp.Select)), "d")
        cols.append(_col("death_date", "d").as_("_death"))
    if outcome.exclude_prior:
        cols.append(b.prior_event(events, start).as_("_prior"))
    query.select(*cols, copy=False)


def _censor(outcome: Outcome) -> exp.Expr:
    """The earliest of observation end, window end and (non-outcome) death."""
    ends: list[exp.Expr] = [_r("_obs_end")]
    if outcome.window.end is not None:
        ends.append(_r("_wend"))
    if not outcome.death:
        ends.append(exp.Coalesce(this=_r("_death"), expressions=[_r("_obs_end")]))
    if len(ends) == 1:
        return ends[0]
    return exp.Least(this=ends[0], expressions=ends[1:])


def _exposure(b: _DatasetBuilder, exposure: Exposure) -> tuple[exp.Expr, list[exp.Expr]]:
    """The label column (first matching group wins) and the row filters it implies."""
    flags = [_r(f"_g{k}") for k in range(len(exposure.groups))]
    label = exp.Case()
    for flag, group in zip(flags, exposure.groups, strict=True):
        label = label.when(flag.copy(), b.param(group.value, "VARCHAR"), copy=False)
    filters: list[exp.Expr] = []
    if exposure.unmatched == "drop":
        filters.append(exp.paren(exp.or_(*(f.copy() for f in flags), copy=False)))
    if exposure.ties == "drop" and len(flags) > 1:
        count: exp.Expr = exp.cast(flags[0].copy(), "INTEGER")
        for flag in flags[1:]:
            count = count + exp.cast(flag.copy(), "INTEGER")
        filters.append(exp.paren(count) <= exp.Literal.number(1))
    return label, filters


def _zero_if_null(value: exp.Expr) -> exp.Expr:
    return exp.cast(exp.Coalesce(this=value, expressions=[exp.Literal.number(0)]), "DOUBLE")


def _cost_until_outcome(b: _DatasetBuilder, cov: CostCovariate) -> exp.Expr:
    """The costs in the window dated up to the end of follow-up — the outcome event if it
    counts, else the censor date (both inclusive) — as a correlated sum over the rows ``r``."""
    censor = exp.column("_censor", "r")
    end = exp.Least(this=exp.Coalesce(this=_r("_first"), expressions=[censor.copy()]),
                    expressions=[censor.copy()])
    costs = b.costs(cov)
    total = _select(exp.Sum(this=_col("amount", "w")), source=_table(costs, "w")).where(
        _col("person_id", "w").eq(_r("_pid")), _col("event_date", "w") <= end, copy=False)
    return _zero_if_null(exp.Subquery(this=total))


def _outcome(outcome: Outcome) -> tuple[list[tuple[str, exp.Expr]], list[exp.Expr]]:
    """The event (and duration) columns and the follow-up filters, from the censor date."""
    censor, first, index = exp.column("_censor", "r"), _r("_first"), _r("_index")
    event = exp.and_(first.is_(exp.null()).not_(), first.copy() <= censor.copy(), copy=False)
    cols = [(outcome.event, _flag(event.copy()))]
    if outcome.duration is not None:
        days = _case(event.copy(), first.copy() - index.copy(), censor.copy() - index.copy())
        cols.append((outcome.duration, exp.cast(days, "INTEGER")))
    filters: list[exp.Expr] = [
        _r("_obs_end").is_(exp.null()).not_(),  # index inside an observation period
        censor.copy() >= _r("_start"),  # some time at risk
    ]
    if outcome.exclude_prior:
        filters.append(exp.not_(_r("_prior")))
    if outcome.require_full_followup:
        filters.append(exp.paren(exp.or_(event.copy(), censor.copy() >= _r("_wend"))))
    return cols, filters


def compile_dataset(spec: DatasetSpec, *, person_ids: bool = False) -> CompiledQuery:
    """SQL over :data:`COHORT_TABLE` giving the spec's columns, one row per kept person
    (with ``person_ids``, a leading ``_person_id`` column too)."""
    b = _DatasetBuilder()
    base = (
        _select(_col("person_id", "en").as_("_pid"), _col("index_date", "en").as_("_index"),
                source=_table(COHORT_TABLE, "en"))
        .join(_table("person", "p"), on=_same_person("p"), copy=False)
    )
    out: list[tuple[str, exp.Expr]] = []
    for i, cov in enumerate(spec.covariates):
        if isinstance(cov, CostCovariate) and cov.until_outcome:
            # needs the follow-up end, which exists only on the rows ``r`` of the final select
            out.append((cov.name, _cost_until_outcome(b, cov)))
            continue
        base.select(_covariate_column(b, cov, base, i).as_(f"_c{i}"), copy=False)
        out.append((cov.name, _r(f"_c{i}")))
    filters: list[exp.Expr] = []
    if spec.exposure is not None:
        for k, group in enumerate(spec.exposure.groups):
            flag = b.presence(group.kind, group.spec, spec.exposure.window)
            base.select(flag.as_(f"_g{k}"), copy=False)
        label, more = _exposure(b, spec.exposure)
        out.append((spec.exposure.name, label))
        filters += more
    if spec.outcome is not None:
        _outcome_columns(b, spec.outcome, base)
    rows: exp.Select = _select(exp.Star(), source=_table(b.cte("base", base), "r"))
    if spec.outcome is not None:
        rows.select(_censor(spec.outcome).as_("_censor"), copy=False)
        cols, more = _outcome(spec.outcome)
        out += cols
        filters += more
    final = _select(
        _r("_pid"), *(expr.as_(f"_o{j}") for j, (_, expr) in enumerate(out)),
        source=exp.Subquery(this=rows, alias=exp.TableAlias(this=exp.to_identifier("r"))),
    ).where(*filters, copy=False)
    for name, cte, materialized in b.ctes:
        final = final.with_(name, as_=cte, materialized=materialized, copy=False)
    sql, params = _render(final, b.values, "duckdb")
    # User column names go on only now: the rendered text must hold nothing but our markers.
    names = ", ".join(f"q._o{j} AS {_quoted(name)}" for j, (name, _) in enumerate(out))
    if person_ids:
        names = f"q._pid AS _person_id, {names}"
    return CompiledQuery(sql=f"SELECT {names} FROM ({sql}) AS q ORDER BY q._pid", params=params)


def _quoted(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"unsafe column name {name!r}")
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")
