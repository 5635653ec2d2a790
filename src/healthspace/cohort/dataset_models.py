"""Analysis-dataset specs: the columns a node computes for each cohort member (pydantic models).

Event filters (``codes`` / ``concepts`` / ``value``) are the cohort models' own, so codes match
exactly as in cohort criteria. Only validation lives here; ``dataset_sql`` compiles a spec.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from healthspace.cohort.models import (
    EVENT_KINDS,
    MAX_DAYS,
    MAX_TOTAL_TERMS,
    EntryCriterion,
    EventFilter,
    MeasurementFilter,
    Occurrences,
)

MAX_COVARIATES = 200
MAX_GROUPS = 50

# Lower case so DuckDB's case-insensitive names cannot collide; a letter first because
# names starting with ``_`` are the compiler's own internal columns.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# person_id and index_date never leave the node; Python keywords break model formulas.
RESERVED_NAMES = frozenset({"person_id", "index_date", *keyword.kwlist, *keyword.softkwlist})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _column_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"column name {name!r} must be 1-63 lower-case letters, digits or _, "
            "starting with a letter"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"column name {name!r} is reserved")
    return name


ColumnName = Annotated[str, AfterValidator(_column_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """Days relative to the index date, both ends inclusive; ``null`` is unbounded.

    Both keys are required (``null`` must be written out) so an unbounded side is a choice.
    """

    start: int | None = Field(ge=-MAX_DAYS, le=MAX_DAYS)
    end: int | None = Field(ge=-MAX_DAYS, le=MAX_DAYS)

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, data: Any) -> Any:
        """Accept the cohort form ``[start, end]`` as well as ``{start, end}``."""
        if isinstance(data, list | tuple) and len(data) == 2:
            return {"start": data[0], "end": data[1]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"window start {self.start} is after end {self.end}")
        return self

    def bounds(self) -> tuple[int | None, int | None]:
        return self.start, self.end


class FollowUpWindow(Window):
    """The outcome window: starts on or after the index date (``start`` ≥ 0, not null)."""

    start: int = Field(ge=0, le=MAX_DAYS)


# --- covariates -----------------------------------------------------------------------------


class AgeCovariate(_Strict):
    """Age in completed years at the index date."""

    name: ColumnName
    type: Literal["age"]


class SexCovariate(_Strict):
    """1 male (8507), 0 female (8532), null for any other gender concept."""

    name: ColumnName
    type: Literal["sex"]


class EventCovariate(EventFilter):
    """1 if at least ``occurrences.min`` matching events start in ``window``, else 0."""

    name: ColumnName
    type: Literal["condition", "drug", "procedure", "visit"]
    window: Window
    occurrences: Occurrences = Field(default_factory=Occurrences)


class MeasurementCovariate(MeasurementFilter):
    """A statistic of matching measurements' ``value_as_number`` in ``window``; null if none."""

    name: ColumnName
    type: Literal["measurement"]
    window: Window
    stat: Literal["last", "first", "min", "max", "mean"] = "last"


# The ``cost`` columns a cost covariate may sum (healthspace.cdm.schema): charge, cost, paid,
# fund-paid (统筹支付) and self-paid (自付).
CostAmount = Literal["total_charge", "total_cost", "total_paid", "paid_by_payer",
                     "paid_by_patient"]


class CostCovariate(_Strict):
    """The sum of ``amount`` over the person's visit costs (``cost`` rows of domain Visit)
    whose visit starts in ``window``; with ``until_outcome`` only up to the end of follow-up
    (the outcome event or censoring). 0 when there are none."""

    name: ColumnName
    type: Literal["cost"]
    window: Window
    amount: CostAmount = "total_charge"
    until_outcome: bool = False


Covariate = Annotated[
    AgeCovariate | SexCovariate | EventCovariate | MeasurementCovariate | CostCovariate,
    Field(discriminator="type"),
]
COVARIATE_TYPES = ("age", "sex", "condition", "drug", "procedure", "visit", "measurement",
                   "cost")


# --- exposure ---------------------------------------------------------------------------------


def _label(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("group values must be printable text")
    return value


class ExposureGroup(EntryCriterion):
    """One level of the exposure: a ``value`` and exactly one event kind with its filter."""

    value: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_label)]

    @model_validator(mode="after")
    def _has_kind(self) -> ExposureGroup:
        if all(getattr(self, k) is None for k in EVENT_KINDS):
            raise ValueError(f"give one of {', '.join(EVENT_KINDS)} beside value")
        return self


class Exposure(_Strict):
    """One categorical column: the first group (in order) with an event in ``window``."""

    name: ColumnName
    window: Window
    groups: list[ExposureGroup] = Field(min_length=1, max_length=MAX_GROUPS)
    ties: Literal["first", "drop"] = "first"
    unmatched: Literal["drop", "null"] = "drop"

    @field_validator("groups")
    @classmethod
    def _distinct_values(cls, groups: list[ExposureGroup]) -> list[ExposureGroup]:
        values = [g.value for g in groups]
        if len(set(values)) != len(values):
            raise ValueError("group values must be distinct")
        return groups


# --- outcome ----------------------------------------------------------------------------------


class Outcome(_Strict):
    """Binary (event in window) or time-to-event (days to the first event, censored)."""

    type: Literal["binary", "time_to_event"]
    condition: EventFilter | None = None
    drug: EventFilter | None = None
    procedure: EventFilter | None = None
    measurement: MeasurementFilter | None = None
    visit: EventFilter | None = None
    death: bool = False
    window: FollowUpWindow
    event: ColumnName = "event"
    duration: ColumnName | None = None
    exclude_prior: bool = False
    require_full_followup: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_duration(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "time_to_event":
            data = {"duration": "time", **data}
        return data

    # Field validators (not one model validator) so each error names its field; ``type``
    # is declared first, so it is in ``info.data`` when these run.
    @field_validator("window")
    @classmethod
    def _window_end(cls, window: FollowUpWindow, info: ValidationInfo) -> FollowUpWindow:
        if info.data.get("type") == "binary" and window.end is None:
            raise ValueError("a binary outcome needs a window end")
        return window

    @field_validator("duration")
    @classmethod
    def _duration(cls, duration: str | None, info: ValidationInfo) -> str | None:
        if duration is not None and info.data.get("type") == "binary":
            raise ValueError("duration is only for time_to_event outcomes")
        return duration

    @field_validator("require_full_followup")
    @classmethod
    def _full(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("type") == "time_to_event":
            raise ValueError("require_full_followup is only for binary outcomes")
        return value

    @model_validator(mode="after")
    def _some_event(self) -> Outcome:
        if not self.death and not self.event_kinds():
            raise ValueError(f"give death: true and/or one of {', '.join(EVENT_KINDS)}")
        return self

    def event_kinds(self) -> list[str]:
        return [k for k in EVENT_KINDS if getattr(self, k) is not None]


# --- the spec ---------------------------------------------------------------------------------


def _terms(f: EventFilter) -> int:
    return len(f.codes) + len(f.concepts)


class DatasetSpec(_Strict):
    """Covariates, an optional exposure and an optional outcome: one row per cohort member."""

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    covariates: list[Covariate] = Field(default_factory=list, max_length=MAX_COVARIATES)
    exposure: Exposure | None = None
    outcome: Outcome | None = None

    @model_validator(mode="after")
    def _size(self) -> DatasetSpec:
        filters: list[EventFilter] = [c for c in self.covariates if isinstance(c, EventFilter)]
        if self.exposure is not None:
            filters += [g.spec for g in self.exposure.groups]
        if self.outcome is not None:
            filters += [getattr(self.outcome, k) for k in self.outcome.event_kinds()]
        total = sum(_terms(f) for f in filters)
        if total > MAX_TOTAL_TERMS:
            raise ValueError(f"{total} codes and concepts in total; the limit is {MAX_TOTAL_TERMS}")
        return self

    @model_validator(mode="after")
    def _cost_until_outcome(self) -> DatasetSpec:
        """A cost covariate that stops at the end of follow-up needs a follow-up: the error
        names the covariate's ``until_outcome`` field, not the whole spec."""
        if self.outcome is not None and self.outcome.type == "time_to_event":
            return self
        for i, cov in enumerate(self.covariates):
            if isinstance(cov, CostCovariate) and cov.until_outcome:
                error = PydanticCustomError(
                    "until_outcome", "until_outcome needs a time_to_event outcome in the spec")
                raise ValidationError.from_exception_data("DatasetSpec", [InitErrorDetails(
                    type=error, loc=("covariates", i, "until_outcome"), input=True)])
        return self

    def columns(self) -> list[tuple[str, str]]:
        """``(field path, column name)`` of every output column, in table order."""
        cols = [(f"covariates[{i}].name", c.name) for i, c in enumerate(self.covariates)]
        if self.exposure is not None:
            cols.append(("exposure.name", self.exposure.name))
        if self.outcome is not None:
            cols.append(("outcome.event", self.outcome.event))
            if self.outcome.duration is not None:
                cols.append(("outcome.duration", self.outcome.duration))
        return cols
