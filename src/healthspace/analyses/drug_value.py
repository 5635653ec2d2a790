"""Drug value for price negotiation: outcomes, cost per patient-year and the ICER of two arms.

One analysis composed of three exact parts over the same rows of ``analysis_data`` (the
two arms' persons with no missing value in a used column):

* per arm, additive sums of cost, person-time and events with their squares and cross
  products — cost and event rates per patient-year (ratio estimators), their delta-method
  CIs and the ICER's (:mod:`healthspace.analyses.drug_value_stats`);
* the Kaplan–Meier curves per arm and the log-rank test — :class:`~.km.KaplanMeier` itself;
* the Cox hazard ratio of treatment vs comparator, optionally adjusted — :class:`~.cox.Cox`
  itself, Newton round after Newton round.

Each round a node builds the two arms' rows once, lends them to KM and Cox as their own
``analysis_data`` (an in-memory table on the node) and sends their partials side by side;
the hub hands each part's partials to that part's ``combine``. Every number is a sum, so the
whole analysis runs under secure aggregation as KM and Cox do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from healthspace.analyses import drug_value_stats as dv
from healthspace.analyses.base import (
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
    Summable,
    plain,
)
from healthspace.analyses.cox import Cox, CoxParams
from healthspace.analyses.km import KaplanMeier, KmParams, survival_outcome
from healthspace.analyses.registry import register
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput, Refused

TABLE = "analysis_data"
ARM, TREATED = "_arm", "_treatment"  # columns of the table lent to KM and Cox, on the node
KM, COX = KaplanMeier(), Cox()
PARTS = ("km", "cox")


class DrugValueParams(Params):
    arm: str
    treatment: str = Field(min_length=1)
    comparator: str = Field(min_length=1)
    duration: str
    event: str
    cost: str
    covariates: list[str] = Field(default_factory=list)
    horizon_days: float | None = Field(default=None, gt=0)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    ties: Literal["efron", "breslow"] = "efron"
    max_iter: int = Field(50, ge=1, le=100)
    currency: str = Field("CNY", min_length=1, max_length=12)

    @field_validator("covariates")
    @classmethod
    def _covariates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("covariates must be distinct")
        if any(name.startswith("_") for name in value):
            raise ValueError("covariate names starting with _ are reserved")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> DrugValueParams:
        if self.treatment == self.comparator:
            raise InvalidInput("treatment and comparator must be different arm values",
                               field="params.comparator")
        roles = {"arm": self.arm, "duration": self.duration, "event": self.event,
                 "cost": self.cost}
        seen: dict[str, str] = {}
        for key, column in roles.items():
            if column in seen:
                raise InvalidInput(f"column {column!r} is both {seen[column]} and {key}",
                                   field=f"params.{key}")
            seen[column] = key
        for column in self.covariates:
            if column in seen:
                raise InvalidInput(f"{column!r} is the {seen[column]} column, not a covariate",
                                   field="params.covariates")
        return self

    @property
    def arms(self) -> tuple[str, str]:
        return self.treatment, self.comparator

    def km(self) -> KmParams:
        return KmParams(duration=self.duration, event=self.event, group=ARM)

    def cox(self) -> CoxParams:
        return CoxParams.model_validate({
            "duration": self.duration, "event": self.event,
            "covariates": [TREATED, *self.covariates], "ties": self.ties,
            "max_iter": self.max_iter})

    def part(self, name: str) -> tuple[Analysis, Params]:
        return (KM, self.km()) if name == "km" else (COX, self.cox())


def _label(value: Any) -> str:
    """An arm value as text: integral floats as integers, so a 0/1 column matches "1"."""
    value = plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rows(ctx: LocalContext, params: DrugValueParams) -> pd.DataFrame:
    """The two arms' rows, validated, with no missing value in a used column; errors name the
    parameter."""
    data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
    used = {"arm": params.arm, "duration": params.duration, "event": params.event,
            "cost": params.cost}
    for key, column in used.items():
        if column not in data.columns:
            raise InvalidInput(f"unknown column {column!r}", field=f"params.{key}")
    for column in params.covariates:
        if column not in data.columns:
            raise InvalidInput(f"unknown column {column!r}", field="params.covariates")
    data = data[[*used.values(), *params.covariates]].dropna()
    labels = data[params.arm].map(_label)
    data = data[labels.isin(params.arms)].reset_index(drop=True)
    times, events = survival_outcome(data, params.duration, params.event)
    cost = data[params.cost]
    if not pd.api.types.is_numeric_dtype(cost) or pd.api.types.is_bool_dtype(cost):
        raise InvalidInput(f"cost column {params.cost!r} must be numeric", field="params.cost")
    if not np.all(np.isfinite(cost.to_numpy(dtype=np.float64))):
        raise InvalidInput("costs must be finite", field="params.cost")
    arm = labels[labels.isin(params.arms)].reset_index(drop=True)
    frame = pd.DataFrame({ARM: arm, params.duration: times, params.event: events,
                          TREATED: (arm == params.treatment).astype(np.int64),
                          "_cost": cost.to_numpy(dtype=np.float64)})
    for column in params.covariates:
        frame[column] = data[column].to_numpy()
    return frame


@contextmanager
def _lent(ctx: LocalContext, frame: pd.DataFrame) -> Iterator[LocalContext]:
    """The arms' rows as ``analysis_data`` of an in-memory store on this node, for KM and
    Cox, with this node's disclosure settings."""
    con = duckdb.connect()
    try:
        con.register("_rows", frame.drop(columns="_cost"))
        con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM _rows")
        yield LocalContext(con=con, site=ctx.site, min_cell_size=ctx.min_cell_size,
                           clock=ctx.clock, release_site_counts=ctx.release_site_counts)
    finally:
        con.close()


def _arm_sums(frame: pd.DataFrame, params: DrugValueParams) -> tuple[np.ndarray, np.ndarray]:
    """Counts (arms × (persons, events)) and sums (arms × dv.SUMS) of this node's rows."""
    counts = np.zeros((2, 2), dtype=np.int64)
    sums = np.zeros((2, len(dv.SUMS)))
    for i, value in enumerate(params.arms):
        part = frame[frame[ARM] == value]
        e = part[params.event].to_numpy(dtype=np.int64)
        counts[i] = (len(part), int(e.sum()))
        sums[i] = dv.person_sums(part["_cost"].to_numpy(),
                                 part[params.duration].to_numpy(dtype=np.float64), e)
    return counts, sums


def _inputs(round_input: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    """Each running part's own round input (every part, with none, in round 1)."""
    if round_input is None:
        return dict.fromkeys(PARTS)
    if not set(round_input) <= set(PARTS) or not round_input:
        raise InvalidInput("the round input names unknown parts", field="round_input")
    return {name: round_input[name] for name in PARTS if name in round_input}


class DrugValue(Analysis):
    name = "drug_value"
    title = "Drug value: outcomes, cost per patient-year and the ICER of two arms"
    params_model = DrugValueParams
    requires_cohort = False
    uses_table = True
    max_rounds = Cox.max_rounds
    secure = True

    def _prepare(self, ctx: LocalContext, params: Params) -> pd.DataFrame:
        assert isinstance(params, DrugValueParams)
        frame = _rows(ctx, params)
        ctx.records_used = len(frame)
        return frame

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, DrugValueParams)
        frame = self._prepare(ctx, params)
        partial: dict[str, Any] = {"k": ctx.min_cell_size}
        with _lent(ctx, frame) as lent:
            for name, given in _inputs(round_input).items():
                impl, sub = params.part(name)
                partial[name] = impl.local(lent, sub, given)
        if round_input is None:
            counts, sums = _arm_sums(frame, params)
            partial.update(counts=encode_array(counts), sums=encode_array(sums))
        return partial

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        """The parts' Summables side by side: public parts under the part's name, masked sums
        under ``part.label``; round 1 adds the arms' counts and sums, masked."""
        assert isinstance(params, DrugValueParams)
        frame = self._prepare(ctx, params)
        public: dict[str, Any] = {"k": ctx.min_cell_size}
        sums: dict[str, np.ndarray] = {}
        integer: set[str] = set()
        compact: dict[str, int] = {}
        with _lent(ctx, frame) as lent:
            for name, given in _inputs(round_input).items():
                impl, sub = params.part(name)
                part = impl.local_secure(lent, sub, given)
                public[name] = part.public
                sums.update({f"{name}.{label}": v for label, v in part.sums.items()})
                integer.update(f"{name}.{label}" for label in part.integer)
                compact.update({f"{name}.{label}": f for label, f in part.compact.items()})
        if round_input is None:
            sums["counts"], sums["sums"] = _arm_sums(frame, params)
            integer.add("counts")
        return Summable(public, sums, frozenset(integer), compact)

    def combine(
        self, partials: Mapping[str, dict[str, Any]], params: Params, state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, DrugValueParams)
        if not partials:
            raise Refused("no site took part in the drug value analysis")
        names = sorted(partials)
        if round == 1:
            state = self._start(
                names, [int(partials[s]["k"]) for s in names],
                np.sum([decode_array(partials[s]["counts"]) for s in names], axis=0),
                np.sum([decode_array(partials[s]["sums"]) for s in names], axis=0),
                {s: int(decode_array(partials[s]["counts"])[:, 0].sum()) for s in names},
                params)
            if "withheld" in state:
                return Final(self._result(params, state))

        def step(name: str, impl: Analysis, sub: Params, st: dict[str, Any]) -> Any:
            return impl.combine({s: partials[s][name] for s in names}, sub, st, round)

        return self._advance(params, state, step)

    def combine_secure(
        self, sums: Mapping[str, np.ndarray], publics: Mapping[str, dict[str, Any]],
        params: Params, state: dict[str, Any], round: int,
    ) -> Final | NextRound:
        assert isinstance(params, DrugValueParams)
        names = sorted(publics)
        if round == 1:
            state = self._start(names, [int(publics[s]["k"]) for s in names],
                                np.asarray(sums["counts"]), np.asarray(sums["sums"]),
                                dict.fromkeys(names), params)
            state["secure_aggregation"] = True
            if "withheld" in state:
                return Final(self._result(params, state))

        def step(name: str, impl: Analysis, sub: Params, st: dict[str, Any]) -> Any:
            own = {label.split(".", 1)[1]: value for label, value in sums.items()
                   if label.startswith(f"{name}.")}
            return impl.combine_secure(own, {s: publics[s][name] for s in names}, sub, st,
                                       round)

        return self._advance(params, state, step)

    @staticmethod
    def _start(names: list[str], ks: list[int], counts: np.ndarray, sums: np.ndarray,
               sites: dict[str, int | None], params: DrugValueParams) -> dict[str, Any]:
        """The first round's state: the arms' network sums, summarised; the outcome parts are
        withheld when an arm has fewer than k events."""
        k = max(ks)
        counts = np.asarray(counts, dtype=np.int64)
        for i, (key, value) in enumerate(zip(("treatment", "comparator"), params.arms,
                                             strict=True)):
            if counts[i, 0] == 0:
                raise InvalidInput(f"no usable row has {params.arm} = {value!r} at any site",
                                   field=f"params.{key}")
            if sums[i][dv.SUMS.index("time")] <= 0:
                raise InvalidInput(f"arm {value!r} has no follow-up time",
                                   field="params.duration")
        state: dict[str, Any] = {"names": names, "k": k, "sites": sites,
                                 "counts": counts.tolist(), "sums": np.asarray(sums).tolist(),
                                 "pending": list(PARTS), "parts": {}, "results": {}}
        small = [value for value, (_, events) in zip(params.arms, counts, strict=True)
                 if events < k]
        if small:
            state["withheld"] = (f"arm {', '.join(small)} has fewer than {k} events: its event "
                                 f"count, event rate, survival curve and every comparison of "
                                 f"outcomes (log-rank, Cox, ICER) are withheld")
        return state

    def _advance(self, params: DrugValueParams, state: dict[str, Any],
                 step: Callable[[str, Analysis, Params, dict[str, Any]], Any]) -> Final | NextRound:
        """Run each pending part's combine; another round while any part asks for one."""
        state = {**state, "parts": dict(state["parts"]), "results": dict(state["results"])}
        ask: dict[str, Any] = {}
        for name in state["pending"]:
            impl, sub = params.part(name)
            outcome = step(name, impl, sub, state["parts"].get(name, {}))
            if isinstance(outcome, Final):
                state["results"][name] = outcome.result
            else:
                state["parts"][name] = outcome.state
                ask[name] = outcome.round_input
        state["pending"] = [name for name in PARTS if name in ask]
        if ask:
            return NextRound(ask, state)
        return Final(self._result(params, state))

    @staticmethod
    def _result(params: DrugValueParams, state: dict[str, Any]) -> dict[str, Any]:
        return dv.result(params, state, treated=TREATED)


register(DrugValue())
