"""The analysis protocol: ``local`` runs on a node's data, ``combine`` merges the partials.

An analysis is written once and runs unchanged in simulation (in-process) and in the real
federation (hub + node processes over HTTP). Partials and results are JSON-able dicts of
numbers, strings and encoded arrays (``healthspace.core.encoding``) — never pickled objects.
Iterative analyses return :class:`NextRound` from ``combine`` until they return :class:`Final`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import duckdb
from pydantic import BaseModel, ConfigDict, ValidationError

from healthspace.core.clock import Clock, SystemClock
from healthspace.core.errors import invalid_from_validation

MIN_CELL_FLOOR = 5
DEFAULT_MIN_CELL = 10


class Params(BaseModel):
    """Base for analysis parameters: typed, validated, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class LocalContext:
    """What ``local`` may touch on a node: a read-only CDM connection and the rules in force."""

    con: duckdb.DuckDBPyConnection
    site: str
    min_cell_size: int = DEFAULT_MIN_CELL
    cohort: Any = None  # healthspace.cohort.models.CohortDefinition | None
    purpose: str = "research"
    clock: Clock = field(default_factory=SystemClock)
    records_used: int = 0

    def __post_init__(self) -> None:
        # The node never releases below the floor, whatever a task asks for.
        self.min_cell_size = max(int(self.min_cell_size), MIN_CELL_FLOOR)

    def cohort_persons_sql(self) -> tuple[str, list[Any]]:
        """SQL (and parameters) yielding ``person_id, index_date`` for the task's cohort."""
        from healthspace.cohort.compiler import compile_cohort

        if self.cohort is None:
            raise ValueError("this analysis needs a cohort")
        compiled = compile_cohort(self.cohort, dialect="duckdb")
        return compiled.sql, list(compiled.params)


@dataclass(frozen=True)
class Final:
    """The study's result."""

    result: dict[str, Any]


@dataclass(frozen=True)
class NextRound:
    """Ask every participating node for another round with ``round_input``."""

    round_input: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)


class Analysis(ABC):
    """One catalogue entry. Subclasses set ``name``, ``params_model`` and implement both steps."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    params_model: ClassVar[type[Params]] = Params
    requires_cohort: ClassVar[bool] = True
    max_rounds: ClassVar[int] = 1

    def parse_params(self, raw: Mapping[str, Any] | None) -> Params:
        try:
            return self.params_model.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise invalid_from_validation(exc, prefix=("params",)) from exc

    @abstractmethod
    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Compute this node's partial. Disclosure control is applied here, on the node."""

    @abstractmethod
    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        """Merge the partials of the nodes that completed this round."""
