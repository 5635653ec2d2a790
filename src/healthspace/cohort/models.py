"""Cohort definitions: structured, validated JSON/YAML that a node compiles to parameterised SQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from healthspace.core.documents import load_document
from healthspace.core.errors import InvalidInput, invalid_from_validation

EVENT_KINDS = ("condition", "drug", "procedure", "measurement", "visit")
CRITERION_KINDS = (*EVENT_KINDS, "observation_period", "age", "sex", "any")

MAX_CODES = 1000  # codes, and separately concept ids, per criterion
MAX_CRITERIA = 100  # per inclusion / exclusion list and per any-group
MAX_DEPTH = 5  # nesting of any-groups
MAX_TOTAL_TERMS = (
    5000  # codes + concept ids in a whole definition (keeps SQL parameter counts sane)
)
MAX_DAYS = 36_600  # |window offset| and prior observation, about 100 years

_VOCAB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,39}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_code(code: str) -> str:
    vocab, sep, value = code.partition(":")
    if not sep or not vocab or not value:
        raise ValueError(f"code {code!r} must look like VOCAB:CODE, e.g. ICD10:E11%")
    if not _VOCAB.match(vocab):
        raise ValueError(f"vocabulary {vocab!r} in {code!r} must be letters, digits, space, _ . -")
    if len(value) > 100 or _CONTROL.search(value):
        raise ValueError(f"code part of {code!r} must be 1-100 printable characters")
    return code


class ValueFilter(_Strict):
    """Comparisons on ``value_as_number``; one event must satisfy all of them."""

    gt: float | None = Field(default=None, allow_inf_nan=False)
    gte: float | None = Field(default=None, allow_inf_nan=False)
    lt: float | None = Field(default=None, allow_inf_nan=False)
    lte: float | None = Field(default=None, allow_inf_nan=False)
    eq: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _not_empty(self) -> ValueFilter:
        if not self.ops():
            raise ValueError("give at least one of gt, gte, lt, lte, eq")
        return self

    def ops(self) -> list[tuple[str, float]]:
        return [
            (op, v)
            for op in ("gt", "gte", "lt", "lte", "eq")
            if (v := getattr(self, op)) is not None
        ]


class EventFilter(_Strict):
    """Which events: ``codes`` (VOCAB:CODE, ``%`` wildcard) and/or ``concepts`` (+ descendants)."""

    allows_value: ClassVar[bool] = False

    codes: list[str] = Field(default_factory=list, max_length=MAX_CODES)
    concepts: list[int] = Field(default_factory=list, max_length=MAX_CODES)
    value: ValueFilter | None = None

    @field_validator("codes")
    @classmethod
    def _codes(cls, codes: list[str]) -> list[str]:
        return [_check_code(c) for c in codes]

    @field_validator("concepts")
    @classmethod
    def _concepts(cls, ids: list[int]) -> list[int]:
        if any(not -(2**63) <= i < 2**63 for i in ids):
            raise ValueError("concept ids must fit in a signed 64-bit integer")
        return ids

    @field_validator("value", mode="before")
    @classmethod
    def _value_allowed(cls, value: Any) -> Any:
        if value is not None and not cls.allows_value:
            raise ValueError("value filters are only allowed on measurement criteria")
        return value

    @model_validator(mode="after")
    def _some_terms(self) -> EventFilter:
        if not self.codes and not self.concepts:
            raise ValueError("give at least one of codes or concepts")
        return self


class MeasurementFilter(EventFilter):
    allows_value: ClassVar[bool] = True


class Occurrences(_Strict):
    min: int = Field(default=1, ge=1, le=10_000)


class EventCriterion(EventFilter):
    """An event filter with a window (days relative to index, inclusive) and a minimum count."""

    window: tuple[int | None, int | None] = (None, None)
    occurrences: Occurrences = Field(default_factory=Occurrences)

    @field_validator("window")
    @classmethod
    def _window(cls, window: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
        start, end = window
        for day in (start, end):
            if day is not None and abs(day) > MAX_DAYS:
                raise ValueError(f"window offsets must be within ±{MAX_DAYS} days")
        if start is not None and end is not None and start > end:
            raise ValueError(f"window start {start} is after end {end}")
        return window


class MeasurementCriterion(EventCriterion):
    allows_value: ClassVar[bool] = True


class ObservationPeriodCriterion(_Strict):
    """An observation period contains the index date and began at least N days before it."""

    min_prior_observation_days: int = Field(default=0, ge=0, le=MAX_DAYS)


class AgeRange(_Strict):
    """Age at index (year of index minus year of birth), bounds inclusive."""

    min: int | None = Field(default=None, ge=0, le=150)
    max: int | None = Field(default=None, ge=0, le=150)

    @model_validator(mode="after")
    def _ordered(self) -> AgeRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"age min {self.min} is greater than max {self.max}")
        return self


def _one_key(data: Any, kinds: tuple[str, ...]) -> Any:
    """Exactly one kind key; unknown keys are left for ``extra='forbid'`` to name."""
    if not isinstance(data, dict):
        return data
    known = [k for k in data if k in kinds]
    if len(known) > 1:
        raise ValueError(f"exactly one key is allowed; got {', '.join(known)}")
    if not data:
        raise ValueError(f"one of these keys is required: {', '.join(kinds)}")
    if known and data[known[0]] is None:
        raise ValueError(f"{known[0]} must not be null")
    return data


class EntryCriterion(_Strict):
    """The index event: exactly one event kind; index date = the person's earliest match."""

    condition: EventFilter | None = None
    drug: EventFilter | None = None
    procedure: EventFilter | None = None
    measurement: MeasurementFilter | None = None
    visit: EventFilter | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        return _one_key(data, EVENT_KINDS)

    @property
    def kind(self) -> str:
        return next(k for k in EVENT_KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> EventFilter:
        spec: EventFilter = getattr(self, self.kind)
        return spec


class Criterion(_Strict):
    """One inclusion/exclusion criterion: an object with exactly one key."""

    condition: EventCriterion | None = None
    drug: EventCriterion | None = None
    procedure: EventCriterion | None = None
    measurement: MeasurementCriterion | None = None
    visit: EventCriterion | None = None
    observation_period: ObservationPeriodCriterion | None = None
    age: AgeRange | None = None
    sex: Literal["F", "M"] | None = None
    any: list[Criterion] | None = Field(default=None, min_length=1, max_length=MAX_CRITERIA)

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        return _one_key(data, CRITERION_KINDS)

    @property
    def kind(self) -> str:
        return next(k for k in CRITERION_KINDS if getattr(self, k) is not None)


def _depth_error(items: Any, path: str, depth: int = 1) -> str | None:
    """Path of the first any-group nested deeper than MAX_DEPTH, checked before parsing."""
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("any"), list):
            where = f"{path}[{i}].any"
            if depth > MAX_DEPTH:
                return where
            if found := _depth_error(item["any"], where, depth + 1):
                return found
    return None


def _count_terms(criteria: list[Criterion]) -> int:
    total = 0
    for c in criteria:
        if c.any is not None:
            total += _count_terms(c.any)
        elif c.kind in EVENT_KINDS:
            spec: EventCriterion = getattr(c, c.kind)
            total += len(spec.codes) + len(spec.concepts)
    return total


class CohortDefinition(_Strict):
    """Entry event, then inclusion criteria (all must hold) and exclusion criteria (none may)."""

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    entry: EntryCriterion
    inclusion: list[Criterion] = Field(default_factory=list, max_length=MAX_CRITERIA)
    exclusion: list[Criterion] = Field(default_factory=list, max_length=MAX_CRITERIA)

    @field_validator("inclusion", "exclusion", mode="before")
    @classmethod
    def _depth(cls, items: Any, info: ValidationInfo) -> Any:
        if where := _depth_error(items, str(info.field_name)):
            raise ValueError(f"any-groups nest deeper than {MAX_DEPTH} levels at {where}")
        return items

    @model_validator(mode="after")
    def _size(self) -> CohortDefinition:
        spec = self.entry.spec
        total = len(spec.codes) + len(spec.concepts)
        total += _count_terms(self.inclusion) + _count_terms(self.exclusion)
        if total > MAX_TOTAL_TERMS:
            raise ValueError(f"{total} codes and concepts in total; the limit is {MAX_TOTAL_TERMS}")
        return self


def load_cohort(source: str | Path | dict[str, Any] | CohortDefinition) -> CohortDefinition:
    """Parse a cohort definition from a dict, JSON/YAML text or a .json/.yaml/.yml file path."""
    if isinstance(source, CohortDefinition):
        return source
    data = load_document(source, "cohort")
    if not isinstance(data, dict):
        raise InvalidInput("a cohort definition must be an object", field="cohort")
    try:
        return CohortDefinition.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix=("cohort",)) from exc
