"""Exact federated Cox proportional hazards: pooled Newton–Raphson over per-time risk-set sums.

Round 1 gathers row counts and covariate sums (the hub centres covariates on the pooled means).
Every later round sends the coefficients; each node returns, per distinct (coarsened) time, the
tail risk-set sums S0, S1, S2, per event time the event count d and (Efron only) the tied-event
sums D0, D1, D2, and Σx over all its events. The hub aligns sites on the union of event times
and computes the partial log-likelihood, gradient and Hessian as on the pooled rows. With
``strata_by_site`` each node returns its own stratum's log-likelihood, gradient and Hessian
instead. A last round counts pairs for Harrell's C: exactly within sites, on score bins across
sites (with an error bound).

Under secure aggregation round 1 also carries each node's distinct (coarsened) event times in
clear; the hub sends their union, the network's event-time grid, with every later round, and
each node aligns its sums on that grid itself, so they add up over nodes and are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy import stats

from healthspace.analyses.base import (
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
    Summable,
)
from healthspace.analyses.cox_concordance import (
    SCORE_BINS,
    by_time,
    concordance_counts,
    concordance_sums,
    pairs_across,
    pairs_summed,
    tail,
)
from healthspace.analyses.km import survival_outcome
from healthspace.analyses.registry import register
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.survival import coarsen_times

TABLE = "analysis_data"
MAX_PARAM_RATIO = 0.33  # refuse near-saturated models: parameters / rows above this
MAX_HALVINGS = 30  # step halvings per Newton step before giving up
SCORE_SPAN = 4.0  # the bins cover the pooled risk score's mean ± 4 SD; the end bins are open
EVENT_KEYS = ("d", "d0", "d1", "d2")


class CoxParams(Params):
    duration: str
    event: str
    covariates: list[str] = Field(min_length=1)
    ties: Literal["efron", "breslow"] = "efron"
    strata_by_site: bool = False
    max_iter: int = Field(50, ge=1, le=100)
    tol: float = Field(1e-12, gt=0, lt=1)

    @field_validator("covariates")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("covariates must be distinct")
        return value


def _load(ctx: LocalContext, params: CoxParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations, 0/1 events and the covariate matrix; rows with a missing value dropped."""
    data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
    for key, col in (("duration", params.duration), ("event", params.event)):
        if col not in data.columns:
            raise InvalidInput(f"unknown column {col!r}", field=f"params.{key}")
    for col in params.covariates:
        if col not in data.columns:
            raise InvalidInput(f"unknown column {col!r}", field="params.covariates")
        if col in (params.duration, params.event):
            raise InvalidInput(f"{col!r} is the duration or event column, not a covariate",
                               field="params.covariates")
    data = data[[params.duration, params.event, *params.covariates]].dropna()
    times, events = survival_outcome(data, params.duration, params.event)
    for col in params.covariates:
        kind = data[col]
        if not (pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_bool_dtype(kind)):
            raise InvalidInput(f"covariate {col!r} must be numeric or boolean",
                               field="params.covariates")
    x = data[params.covariates].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InvalidInput("covariates must be finite", field="params.covariates")
    return times, events, x


def _check_release(n: int, n_events: int, p: int, k: int) -> None:
    if n < k:
        raise Refused(f"only {n} usable rows, below the minimum cell size {k}; the Cox model "
                      f"is refused")
    if p / n > MAX_PARAM_RATIO:
        raise Refused(f"{p} covariates for {n} rows is near-saturated (ratio above "
                      f"{MAX_PARAM_RATIO}); the Cox model is refused")
    if n_events < k:
        raise Refused(f"only {n_events} events, below the minimum cell size {k}; the Cox "
                      f"model is refused")


def _prepare(ctx: LocalContext, params: CoxParams
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Coarsened durations, events, covariates and this node's counts; refuses what may not
    be released."""
    t, e, x = _load(ctx, params)
    n, p = x.shape
    ctx.records_used = n
    _check_release(n, int(e.sum()), p, ctx.min_cell_size)
    rule = coarsen_times(t, ctx.min_cell_size)
    return rule.times, e, x, {"n": n, "n_events": int(e.sum()), "coarsened": rule.moved}


def _centred(x: np.ndarray, round_input: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Covariates centred on the pooled means, and the coefficients, from the round input."""
    mean = decode_array(round_input["mean"])
    beta = decode_array(round_input["beta"])
    if mean.shape != (x.shape[1],) or beta.shape != (x.shape[1],):
        raise InvalidInput("the round input does not match the covariates",
                           field="params.covariates")
    return x - mean, beta


def _grid(round_input: dict[str, Any], t: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The network's event times; they must hold every event time of this node."""
    grid = decode_array(round_input["grid"]) if "grid" in round_input else None
    if grid is None or grid.ndim != 1 or not np.all(np.isin(t[e == 1], grid)):
        raise InvalidInput("the round input's event-time grid lacks event times of this node",
                           field="round_input")
    return grid


def _risk_sums(t: np.ndarray, e: np.ndarray, xc: np.ndarray, beta: np.ndarray,
               efron: bool) -> dict[str, np.ndarray]:
    """This node's tail risk-set sums per distinct time and event sums per event time."""
    w = np.exp(xc @ beta)
    wx = xc * w[:, None]
    wxx = xc[:, :, None] * wx[:, None, :]
    times, (s0, s1, s2) = by_time(t, w, wx, wxx)
    ev = e == 1
    etimes, (d, d0, d1, d2) = by_time(t[ev], e[ev], w[ev], wx[ev], wxx[ev])
    # Σx over events enters the likelihood only as a total, so only the total is released
    sums = {"times": times, "s0": tail(s0), "s1": tail(s1), "s2": tail(s2),
            "event_times": etimes, "d": d.astype(np.int64), "xsum": xc[ev].sum(axis=0)}
    if efron:  # Breslow needs no tied-event sums, so they are not released
        sums.update(d0=d0, d1=d1, d2=d2)
    return sums


def _align(parts: list[dict[str, np.ndarray]], p: int,
           etimes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Risk-set and event sums of all sites at the union of their event times (or at
    ``etimes``, which must hold them all).

    A site's risk set at a global event time t is its tail sum at its smallest own time ≥ t.
    """
    if etimes is None:
        etimes = np.unique(np.concatenate([q["event_times"] for q in parts]))
    m = len(etimes)
    shapes = {"s0": (m,), "s1": (m, p), "s2": (m, p, p), "d": (m,), "xsum": (p,),
              "d0": (m,), "d1": (m, p), "d2": (m, p, p)}
    out = {key: np.zeros(shape) for key, shape in shapes.items()}
    for q in parts:
        idx = np.searchsorted(q["times"], etimes)
        ok = idx < len(q["times"])
        for key in ("s0", "s1", "s2"):
            out[key][ok] += q[key][idx[ok]]
        at = np.searchsorted(etimes, q["event_times"])
        for key in EVENT_KEYS:
            if key in q:
                out[key][at] += q[key]
        out["xsum"] += q["xsum"]
    return out


def _loglik(beta: np.ndarray, a: dict[str, np.ndarray],
            efron: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, gradient and Hessian (Efron or Breslow) from aligned sums.

    Efron's l-th term (l = 0…d-1) at a time with d events uses φ = S0 − (l/d)·D0 (and so on
    for S1, S2); Breslow is the case l/d = 0. Terms are folded back per time with weights so
    memory stays (times × p × p).
    """
    d = a["d"].astype(np.int64)
    m = len(d)
    rep = np.repeat(np.arange(m), d)
    frac = ((np.arange(len(rep)) - np.repeat(np.cumsum(d) - d, d)) / d[rep] if efron
            else np.zeros(len(rep)))
    phi = a["s0"][rep] - frac * a["d0"][rep]

    def per_time(values: np.ndarray) -> np.ndarray:
        return np.bincount(rep, weights=values, minlength=m)

    w0, wf = per_time(1 / phi), per_time(frac / phi)
    q0, q1, q2 = per_time(phi**-2), per_time(frac / phi**2), per_time(frac**2 / phi**2)
    s1, d1 = a["s1"], a["d1"]
    xs = a["xsum"]
    ll = float(xs @ beta - np.log(phi).sum())
    grad = xs - (w0 @ s1 - wf @ d1)
    cross = (s1.T * q1) @ d1
    hess = ((s1.T * q0) @ s1 - cross - cross.T + (d1.T * q2) @ d1
            - np.tensordot(w0, a["s2"], axes=1) + np.tensordot(wf, a["d2"], axes=1))
    return ll, grad, hess


def _decode_all(part: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: decode_array(v) for k, v in part.items() if isinstance(v, dict)}


class Cox(Analysis):
    name = "cox"
    title = "Cox proportional hazards (exact pooled fit)"
    params_model = CoxParams
    requires_cohort = False
    uses_table = True
    max_rounds = 200
    secure = True

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, CoxParams)
        t, e, x, head = _prepare(ctx, params)
        if round_input is None:
            return {**head, "sum_x": encode_array(x.sum(axis=0)), "sum_xx": encode_array(x.T @ x)}
        xc, beta = _centred(x, round_input)
        if "edges" in round_input:
            return {**head, **concordance_counts(t, e, xc @ beta, round_input["edges"],
                                                  params.strata_by_site)}
        sums = _risk_sums(t, e, xc, beta, params.ties == "efron")
        if params.strata_by_site:
            ll, grad, hess = _loglik(beta, _align([sums], x.shape[1]), params.ties == "efron")
            return {**head, "ll": ll, "grad": encode_array(grad), "hess": encode_array(hess)}
        return {**head, **{key: encode_array(value) for key, value in sums.items()}}

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, CoxParams)
        if not partials:
            raise Refused("no site took part in the Cox model")
        names = sorted(partials)
        if round == 1:
            return self._start(partials, params)
        if self._concordance_round(names, state, round):
            comparable, concordant, tied = (sum(int(partials[s][key]) for s in names)
                                            for key in ("comparable", "concordant", "tied"))
            across = (None if params.strata_by_site
                      else pairs_across([_decode_all(partials[s]) for s in names]))
            return Final(self._result(params, state, (comparable, concordant, tied), across))
        trial = np.asarray(state["trial"], dtype=np.float64)
        if params.strata_by_site:
            ll = sum(float(partials[s]["ll"]) for s in names)
            grad = np.sum([decode_array(partials[s]["grad"]) for s in names], axis=0)
            hess = np.sum([decode_array(partials[s]["hess"]) for s in names], axis=0)
        else:
            aligned = _align([_decode_all(partials[s]) for s in names], len(params.covariates))
            ll, grad, hess = _loglik(trial, aligned, params.ties == "efron")
        return self._newton(ll, grad, hess, params, state)

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        """Round 1: the distinct event times in clear (unless stratified: they are not
        needed), the counts and covariate sums masked. Later rounds: every sum masked —
        risk-set and event sums on the network's event-time grid (or, stratified, this
        stratum's log-likelihood, gradient and Hessian), then the concordance counts."""
        assert isinstance(params, CoxParams)
        t, e, x, head = _prepare(ctx, params)
        if round_input is None:
            public = ({} if params.strata_by_site
                      else {"event_times": encode_array(np.unique(t[e == 1]))})
            sums = {key: np.asarray([value]) for key, value in head.items()}
            return Summable(public, {**sums, "sum_x": x.sum(axis=0), "sum_xx": x.T @ x},
                            frozenset(head))
        xc, beta = _centred(x, round_input)
        grid = None if params.strata_by_site else _grid(round_input, t, e)
        if "edges" in round_input:
            counts = concordance_sums(t, e, xc @ beta, round_input["edges"], grid)
            return Summable({}, counts, frozenset(counts))
        efron = params.ties == "efron"
        sums = _risk_sums(t, e, xc, beta, efron)
        if grid is None:
            ll, grad, hess = _loglik(beta, _align([sums], x.shape[1]), efron)
            return Summable({}, {"ll": np.asarray([ll]), "grad": grad, "hess": hess})
        aligned = _align([sums], x.shape[1], grid)
        keys = ("s0", "s1", "s2", "xsum", *(EVENT_KEYS if efron else ("d",)))
        return Summable({}, {**{key: aligned[key] for key in keys},
                             "d": aligned["d"].astype(np.int64)}, frozenset({"d"}))

    def combine_secure(
        self,
        sums: Mapping[str, np.ndarray],
        publics: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        """The network sums stand in for the aligned sites; per-site counts are withheld."""
        assert isinstance(params, CoxParams)
        names = sorted(publics)
        if round == 1:
            grid = ({} if params.strata_by_site else {"grid": encode_array(np.unique(
                np.concatenate([decode_array(publics[s]["event_times"]) for s in names])))})
            return self._begin(names, int(sums["n"][0]), int(sums["n_events"][0]),
                               sums["sum_x"], sums["sum_xx"], params,
                               sites=dict.fromkeys(names), events=dict.fromkeys(names),
                               coarsened=dict.fromkeys(names),
                               coarsened_total=int(sums["coarsened"][0]), **grid)
        if self._concordance_round(names, state, round):
            comparable, concordant, tied = (int(v) for v in sums["within"])
            across = None if params.strata_by_site else pairs_summed(sums)
            result = self._result(params, state, (comparable, concordant, tied), across)
            return Final({**result, "coarsened_total": state["coarsened_total"],
                          "secure_aggregation": True})
        if params.strata_by_site:
            ll, grad, hess = float(sums["ll"][0]), sums["grad"], sums["hess"]
        else:
            m, p = len(sums["d"]), len(params.covariates)
            # Breslow sends no tied-event sums: they are zero in its likelihood
            aligned = {"d0": np.zeros(m), "d1": np.zeros((m, p)), "d2": np.zeros((m, p, p)),
                       **sums}
            ll, grad, hess = _loglik(np.asarray(state["trial"]), aligned,
                                     params.ties == "efron")
        return self._newton(ll, grad, hess, params, state)

    def _concordance_round(self, names: list[str], state: dict[str, Any], round: int) -> bool:
        """Whether this round brought the concordance counts; refuses changed sites and stops
        at the round cap."""
        if names != state["names"]:
            raise Refused(f"sites changed between rounds ({', '.join(names)}); the Newton "
                          f"iterations need the same sites throughout")
        if state.get("done"):
            return True
        if round >= self.max_rounds - 1:
            raise InvalidInput(f"the Cox model did not converge within {self.max_rounds} "
                               f"rounds", field="params.max_iter")
        return False

    @staticmethod
    def _ask(state: dict[str, Any], beta: np.ndarray, **extra: Any) -> dict[str, Any]:
        ask = {"mean": encode_array(np.asarray(state["mean"])), "beta": encode_array(beta),
               **extra}
        if "grid" in state:  # secure aggregation: nodes align their sums on it
            ask["grid"] = state["grid"]
        return ask

    def _start(self, partials: Mapping[str, dict[str, Any]], params: CoxParams) -> NextRound:
        names = sorted(partials)

        def total(key: str) -> np.ndarray:
            return np.sum([decode_array(partials[s][key]) for s in names], axis=0)

        def per_site(key: str) -> dict[str, int]:
            return {s: int(partials[s][key]) for s in names}

        sites, events = per_site("n"), per_site("n_events")
        return self._begin(names, sum(sites.values()), sum(events.values()), total("sum_x"),
                           total("sum_xx"), params, sites=sites, events=events,
                           coarsened=per_site("coarsened"))

    def _begin(self, names: list[str], n: int, n_events: int, sum_x: np.ndarray,
               sum_xx: np.ndarray, params: CoxParams, **extra: Any) -> NextRound:
        """The first Newton round, from the network's counts and covariate sums."""
        mean = sum_x / n
        cov = sum_xx / n - np.outer(mean, mean)
        beta = np.zeros(len(params.covariates))
        state = {"names": names, "mean": mean.tolist(), "cov": np.atleast_2d(cov).tolist(),
                 "beta": None, "trial": beta.tolist(), "iterations": 0, "halvings": 0,
                 "nobs": n, "n_events": n_events, **extra}
        return NextRound(self._ask(state, beta), state)

    def _newton(self, ll: float, grad: np.ndarray, hess: np.ndarray, params: CoxParams,
                state: dict[str, Any]) -> NextRound:
        """A Newton step (or a step halving) from the network's log-likelihood, gradient and
        Hessian at the trial coefficients; asks for the concordance counts once converged."""
        p = len(params.covariates)
        trial = np.asarray(state["trial"], dtype=np.float64)
        state = dict(state)
        if state["beta"] is not None:
            old = np.asarray(state["beta"])
            if not np.isfinite(ll) or ll < state["ll"] - 1e-12 * (1 + abs(state["ll"])):
                if state["halvings"] >= MAX_HALVINGS:
                    raise InvalidInput("the Cox model did not converge: step halving could not "
                                       "increase the partial likelihood", field="params.max_iter")
                trial = old + (trial - old) / 2
                state.update(trial=trial.tolist(), halvings=state["halvings"] + 1)
                return NextRound(self._ask(state, trial), state)
        else:
            state["ll_null"] = ll
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            step = np.full(p, np.nan)
        if not np.all(np.isfinite(step)) or np.linalg.matrix_rank(hess) < p:
            raise InvalidInput("the information matrix is singular: a covariate is constant or "
                               "collinear with others", field="params.covariates")
        state.update(beta=trial.tolist(), ll=ll, halvings=0, hess=hess.tolist())
        if state["iterations"] > 0 and np.max(np.abs(step)) <= params.tol * (
                1 + np.max(np.abs(trial))):
            sd = float(np.sqrt(max(trial @ np.asarray(state["cov"]) @ trial, 0.0)))
            edges = np.linspace(-SCORE_SPAN * sd, SCORE_SPAN * sd, SCORE_BINS - 1)
            state["done"] = True
            return NextRound(self._ask(state, trial, edges=edges.tolist()), state)
        if state["iterations"] >= params.max_iter:
            raise InvalidInput(
                f"the Cox model did not converge within {params.max_iter} Newton iterations "
                f"(last step {np.max(np.abs(step)):.3g}); a covariate may separate the events "
                f"(monotone likelihood) — drop it, or raise max_iter", field="params.max_iter")
        trial = trial + step
        state.update(trial=trial.tolist(), iterations=state["iterations"] + 1)
        return NextRound(self._ask(state, trial), state)

    @staticmethod
    def _result(params: CoxParams, state: dict[str, Any], within: tuple[int, int, int],
                across: tuple[int, int, int] | None) -> dict[str, Any]:
        """The fit, with Harrell's C from the (comparable, concordant, tied) pairs within
        sites and, unless stratified, the (comparable, concordant, same-bin) pairs across."""
        columns = params.covariates
        beta = np.asarray(state["beta"])
        cov = np.linalg.inv(-np.asarray(state["hess"]))
        bse = np.sqrt(np.diag(cov))
        z = beta / bse
        q = stats.norm.ppf(0.975)
        comparable, concordant, tied = within
        credit = concordant + tied / 2
        undecided = 0
        if across is not None:
            comparable += across[0]
            credit += across[1] + across[2] / 2
            undecided = across[2]
        ll, ll_null = float(state["ll"]), float(state["ll_null"])
        lr = 2 * (ll - ll_null)

        def named(values: np.ndarray) -> dict[str, float]:
            return dict(zip(columns, (float(v) for v in values), strict=True))

        return {
            "params": named(beta),
            "bse": named(bse),
            "hazard_ratios": named(np.exp(beta)),
            "conf_int": {c: [float(b - q * s), float(b + q * s)]
                         for c, b, s in zip(columns, beta, bse, strict=True)},
            "zvalues": named(z),
            "pvalues": named(2 * stats.norm.sf(np.abs(z))),
            "log_likelihood": ll,
            "log_likelihood_null": ll_null,
            "lr_test": {"statistic": lr, "df": len(columns),
                        "p": float(stats.chi2.sf(lr, len(columns)))},
            "concordance": credit / comparable if comparable else None,
            "concordance_error_bound": undecided / 2 / comparable if comparable else None,
            "nobs": state["nobs"],
            "n_events": state["n_events"],
            "iterations": int(state["iterations"]),
            "converged": True,
            "ties": params.ties,
            "strata_by_site": params.strata_by_site,
            "sites": state["sites"],
            "coarsened": state["coarsened"],
        }


register(Cox())
