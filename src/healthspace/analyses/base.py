"""The analysis protocol: ``local`` runs on a node's data, ``combine`` merges the partials.

An analysis is written once and runs unchanged in simulation (in-process) and in the real
federation (hub + node processes over HTTP). Partials and results are JSON-able dicts of
numbers, strings and encoded arrays (``healthspace.core.encoding``) — never pickled objects.
Iterative analyses return :class:`NextRound` from ``combine`` until they return :class:`Final`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from healthspace.core.clock import Clock, SystemClock
from healthspace.core.errors import invalid_from_validation
from healthspace.core.limits import DEFAULT_MIN_CELL, MIN_CELL_FLOOR
from healthspace.governance.consent_filter import ConsentFilter


class Params(BaseModel):
    """Base for analysis parameters: typed, validated, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid")


# Persons ``p`` whose consent record flips the default (the filter's temp tables).
FLIPPED_CONSENT = ("(p.person_source_value IN (SELECT v FROM _consent_flip_psv) "
                   "OR p.person_id IN (SELECT v FROM _consent_flip_pid))")


@dataclass(frozen=True)
class Linkage:
    """What a node with an identity vault lends record-linkage analyses: national ids of
    local persons, a per-study secret (bytes) for a label, and where the designated side
    keeps which of its persons are shared."""

    national_ids: Callable[[Sequence[int]], dict[int, str]]
    study_secret: Callable[[str], bytes]
    keep_links: Callable[[Sequence[int]], Any] | None = None


@dataclass(frozen=True)
class RegistryRows:
    """A registry's materialised rows, loaded into the session's temp tables by the node
    (healthspace.node.registries) in place of compiling the task's cohort and dataset.

    ``cohort_table`` holds ``person_id, index_date`` of every cohort member and
    ``dataset_table`` (when the task has a dataset) ``person_id, index_date`` and the
    dataset's columns, both with no consent applied: it is applied here, at query time.
    """

    cohort_table: str
    dataset_table: str | None = None


@dataclass
class LocalContext:
    """What ``local`` may touch on a node: a read-only CDM connection and the rules in force."""

    con: duckdb.DuckDBPyConnection
    site: str
    min_cell_size: int = DEFAULT_MIN_CELL
    cohort: Any = None  # healthspace.cohort.models.CohortDefinition | None
    purpose: str = "research"
    clock: Clock = field(default_factory=SystemClock)
    consent: ConsentFilter | None = None
    records_used: int = 0
    dataset: Any = None  # healthspace.cohort.dataset.DatasetSpec | None
    # Set by a node that remembers its releases (healthspace.node.differencing): raises
    # Refused when an exact count of these persons would enable a differencing attack.
    release_guard: Callable[[Sequence[int]], None] | None = None
    # Under secure aggregation: may this node's own count travel in clear (policy)?
    release_site_counts: bool = True
    # Record linkage (healthspace.analyses.psi_link): lent by a node with an identity vault.
    linkage: Linkage | None = None
    # Where a scoring analysis writes risk scores on the node: (model, person ids, scores).
    score_sink: Callable[[dict[str, Any], Sequence[int], Sequence[float]], None] | None = None
    # Where an analysis keeps per-record findings on the node, never in a result:
    # (kind, rows) — e.g. the payer's per-claim evidence answers.
    findings_sink: Callable[[str, list[dict[str, Any]]], Any] | None = None
    # A registry's rows standing in for the compiled cohort and dataset (same definition).
    registry: RegistryRows | None = None
    # Feature matrices kept as long as the node's store connection (similar_features).
    feature_cache: Any = None

    def __post_init__(self) -> None:
        # The node never releases below the floor, whatever a task asks for.
        self.min_cell_size = max(int(self.min_cell_size), MIN_CELL_FLOOR)
        if self.consent is not None and not self.consent.is_noop:
            # Session-local temp tables: the CDM store itself stays read-only. Registered
            # frames, not array parameters, so every engine can take them (cdm.engines).
            _temp_values(self.con, "_consent_flip_psv", "VARCHAR",
                         pd.Series(sorted(self.consent.flip_source_values), dtype="object"))
            _temp_values(self.con, "_consent_flip_pid", "BIGINT",
                         pd.Series(sorted(self.consent.flip_person_ids), dtype="int64"))

    def consented_persons_sql(self) -> str:
        """SQL selecting ``person_id`` of every person whose consent permits this purpose."""
        if self.consent is None or self.consent.is_noop:
            return "SELECT person_id FROM person"
        flipped = FLIPPED_CONSENT
        keep = f"NOT {flipped}" if self.consent.default_permits else flipped
        return f"SELECT p.person_id FROM person p WHERE {keep}"

    def cohort_persons_sql(self) -> tuple[str, list[Any]]:
        """SQL (and parameters) yielding ``person_id, index_date`` for the task's cohort.

        Persons whose consent does not permit the study's purpose are left out here, so every
        analysis built on the cohort honours consent without doing anything itself.
        """
        from healthspace.cohort.compiler import compile_cohort

        if self.cohort is None:
            raise ValueError("this analysis needs a cohort")
        if self.registry is not None:  # the same cohort, read from the registry's rows
            base, params = (f"SELECT person_id, index_date FROM temp.{self.registry.cohort_table}",
                            [])
        else:
            compiled = compile_cohort(self.cohort, dialect="duckdb")
            base, params = compiled.sql, list(compiled.params)
        if self.consent is None or self.consent.is_noop:
            return base, params
        sql = (
            f"SELECT c.person_id, c.index_date FROM ({base}) c "
            f"WHERE c.person_id IN ({self.consented_persons_sql()})"
        )
        return sql, params

    def guard_release(self, person_ids: Sequence[int] | None = None) -> None:
        """Call before releasing an exact (un-noised) count of ``person_ids`` — by default the
        task's consented cohort; the node's release guard may refuse. A no-op without a guard.
        """
        if self.release_guard is None:
            return
        if person_ids is None:
            sql, args = self.cohort_persons_sql()
            rows = self.con.execute(f"SELECT DISTINCT person_id FROM ({sql}) AS c",
                                    args).fetchall()
            person_ids = [int(row[0]) for row in rows]
        self.release_guard(person_ids)


def _temp_values(con: Any, table: str, sql_type: str, values: pd.Series) -> None:
    """``CREATE OR REPLACE TEMP TABLE table (v sql_type)`` holding ``values``."""
    source = f"_hs_src{table}"
    con.execute(f"DROP TABLE IF EXISTS temp.{table}")  # also ends a pending DuckDB result
    con.register(source, pd.DataFrame({"v": values}))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS "
                    f"SELECT CAST(v AS {sql_type}) AS v FROM {source}")
    finally:
        con.unregister(source)


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON partials carry; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Summable:
    """A node's partial for secure aggregation (docs/secure-aggregation.md).

    ``public`` travels in clear and must be safe to release per node; every array in ``sums``
    (label -> array) is masked, so the hub learns only its sum over all nodes of the round.
    Every node must produce the same labels and shapes (fixed, or agreed through the round
    input). Labels in ``integer`` are exact counts and are decoded as int64.
    """

    public: dict[str, Any]
    sums: dict[str, np.ndarray]
    integer: frozenset[str] = frozenset()
    # label -> fractional bits, for labels the coordinator bounded in the round input
    # (``secure_scales``): they travel in the compact ring Z_2^64, 8 bytes per value.
    compact: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Final:
    """The study's result; ``progress`` is an optional last entry for the progress feed.

    ``deliveries`` are results addressed, per node name, to that node's organisation only
    (and to payer organisations), e.g. a hospital's own case-mix position: the hub keeps
    them beside the result and shows each viewer only the entries addressed to it.
    """

    result: dict[str, Any]
    progress: dict[str, Any] | None = None
    deliveries: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class NextRound:
    """Ask every participating node for another round with ``round_input``.

    ``progress`` (small, JSON-able, disclosure-safe) is what the round achieved, e.g. a
    training round's loss and AUC; the hub keeps it for ``GET /studies/{id}/progress``.
    """

    round_input: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] | None = None


class Analysis(ABC):
    """One catalogue entry. Subclasses set ``name``, ``params_model`` and implement both steps.

    ``uses_table`` analyses read one row per person from the table ``analysis_data``: on a
    node it is built from the study's cohort by its analysis-dataset spec
    (``healthspace.cohort.dataset``); in simulation over plain tables it is the site's CSV.
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    params_model: ClassVar[type[Params]] = Params
    requires_cohort: ClassVar[bool] = True
    uses_table: ClassVar[bool] = False
    max_rounds: ClassVar[int] = 1
    # Analyses whose partials are sums implement local_secure / combine_secure.
    secure: ClassVar[bool] = False
    # When a ``dp_epsilon`` parameter is charged to the consumer's ε budget: every task, or
    # only the first round's (an iterative DP analysis accounts its ε over all rounds).
    dp_charge: ClassVar[str] = "every_round"
    # The node builds ``analysis_data`` with a ``_person_id`` column (kept on the node).
    needs_person_ids: ClassVar[bool] = False

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

    def check_nodes(self, params: Params, nodes: Sequence[str]) -> None:
        """Raise InvalidInput naming the field when the study's nodes do not fit the analysis
        (checked by the hub at submission and by the simulation). Any set of nodes by default.
        """
        return None

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        """This node's partial split into what travels in clear and what is masked."""
        raise NotImplementedError(f"{self.name} does not support secure aggregation")

    def combine_secure(
        self,
        sums: Mapping[str, np.ndarray],
        publics: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        """Merge the unmasked network sums and the nodes' public parts of one round."""
        raise NotImplementedError(f"{self.name} does not support secure aggregation")
