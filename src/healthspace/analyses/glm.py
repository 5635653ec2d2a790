"""Exact federated GLM: pooled IRLS over summed node-side X'WX / X'Wz, as statsmodels fits it."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy import special, stats

from healthspace.analyses.base import (
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
    Summable,
    plain,
)
from healthspace.analyses.registry import register
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.secagg_ring import compact_scale

TABLE = "analysis_data"
_SCALARS = ("deviance", "pearson", "llf", "sum_log_w")
MAX_PARAM_RATIO = 0.33  # refuse near-saturated models: parameters / rows above this


# A model with more terms than this is not a federated GLM anyone fits (and parsing a
# formula of thousands of terms would tie up the hub for seconds).
MAX_TERMS = 200


class GlmParams(Params):
    formula: str = Field(max_length=20_000)
    family: Literal["gaussian", "binomial", "poisson"] = "gaussian"
    offset: str | None = None
    weights: str | None = None  # statsmodels ``var_weights`` semantics
    max_iter: int = 50
    tol: float = 1e-12

    @field_validator("formula")
    @classmethod
    def _parses(cls, value: str) -> str:
        import formulaic

        if "~" not in value:
            raise ValueError("formula must look like 'y ~ x1 + x2'")
        if value.count("+") + value.count("*") + value.count(":") >= MAX_TERMS:
            raise ValueError(f"formula has more than {MAX_TERMS} terms")
        try:
            formula = formulaic.Formula(value)
        except Exception as exc:  # formulaic raises several error types
            raise ValueError(f"cannot parse formula: {exc}") from None
        if not hasattr(formula, "lhs"):
            raise ValueError("formula needs a response on the left of '~'")
        return value


def _ordered_formula(formula: str, data: pd.DataFrame) -> Any:
    """The formula with terms ordered as statsmodels (patsy-compatible 'legacy' order) does."""
    import formulaic
    from formulaic.parser import DefaultFormulaParser

    flags = DefaultFormulaParser.FeatureFlags.TWOSIDED
    probe = formulaic.model_matrix(formula, data)
    parsed = formulaic.Formula(formula, _parser=DefaultFormulaParser(feature_flags=flags),
                               _ordering="none")
    rhs_formula = parsed.rhs
    include_intercept = any(t.degree == 0 and str(t) == "1" for t in rhs_formula)
    parser = DefaultFormulaParser(feature_flags=flags, include_intercept=include_intercept)
    original = list(parser.get_terms(str(rhs_formula)).root)
    categorical = list(probe.rhs.model_spec.factor_contrasts.keys())
    intercept = [t for t in original if t.degree == 0]
    rest = [t for t in original if t.degree != 0]
    cats = sorted([t for t in rest if all(f in categorical for f in t.factors)],
                  key=lambda t: t.degree)
    rest = [t for t in rest if t not in cats]
    conts: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for term in rest:
        key = tuple(sorted(f for f in term.factors if f not in categorical))
        conts[key].append(term)
    final = [t for group in conts.values() for t in sorted(group, key=lambda t: t.degree)]
    return formulaic.Formula(
        lhs=formulaic.Formula(parsed.lhs, _ordering="none"),
        rhs=formulaic.Formula(intercept + cats + final, _ordering="none"),
        _ordering="none",
    )


def _sort_levels(values: list[Any]) -> list[Any]:
    try:
        return sorted(set(values))
    except TypeError:
        return sorted(set(values), key=str)


def _design(
    ctx: LocalContext, params: GlmParams, levels: Mapping[str, list[Any]] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], dict[str, list[Any]]]:
    """y, X, offset, weights, column names and this site's categorical levels."""
    import formulaic

    data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
    try:
        needed = set(formulaic.Formula(params.formula).required_variables)
    except Exception as exc:
        raise InvalidInput(f"cannot parse formula: {exc}", field="params.formula") from None
    for name, col in (("params.offset", params.offset), ("params.weights", params.weights)):
        if col is not None and col not in data.columns:
            raise InvalidInput(f"unknown column {col!r}", field=name)
    missing = sorted(str(v) for v in needed if str(v) not in data.columns
                     and str(v) not in {"C", "np"})
    if missing:
        raise InvalidInput(f"unknown column(s) in formula: {', '.join(missing)}",
                           field="params.formula")
    used = [c for c in data.columns if c in {str(v) for v in needed}
            or c in (params.offset, params.weights)]
    data = data.dropna(subset=used).reset_index(drop=True)
    if len(data) < ctx.min_cell_size:
        raise Refused(f"only {len(data)} usable rows, below the minimum cell size "
                      f"{ctx.min_cell_size}; the GLM is refused")
    try:
        mm = formulaic.model_matrix(_ordered_formula(params.formula, data), data)
    except Exception as exc:
        raise InvalidInput(f"cannot build the design matrix: {exc}",
                           field="params.formula") from None
    rhs_spec = mm.rhs.model_spec
    local_levels = {
        str(name): [plain(v) for v in state["categories"]]
        for name, (kind, state) in rhs_spec.encoder_state.items()
        if str(kind.value) == "categorical"
    }
    X = mm.rhs
    if levels:
        encoder_state = dict(rhs_spec.encoder_state)
        for name, lv in levels.items():
            kind, state = encoder_state[name]
            new_state = dict(state)
            new_state["categories"] = list(lv)
            if "contrasts" in state:
                new_state["contrasts"] = dataclasses.replace(state["contrasts"], levels=list(lv))
            encoder_state[name] = (kind, new_state)
        X = rhs_spec.update(encoder_state=encoder_state, structure=None).get_model_matrix(data)
    if mm.lhs.shape[1] != 1:
        raise InvalidInput("the response must be one numeric column", field="params.formula")
    y = np.asarray(mm.lhs.iloc[:, 0], dtype=np.float64)
    rows = np.asarray(X.index)
    offset = (np.asarray(data[params.offset].iloc[rows], dtype=np.float64)
              if params.offset else np.zeros(len(rows)))
    weights = (np.asarray(data[params.weights].iloc[rows], dtype=np.float64)
               if params.weights else np.ones(len(rows)))
    return (y, np.asarray(X, dtype=np.float64), offset, weights,
            [str(c) for c in X.columns], local_levels)


def _family_terms(
    family: str, y: np.ndarray, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu, dmu/deta and variance V(mu) for the canonical link of ``family``."""
    if family == "gaussian":
        return eta, np.ones_like(eta), np.ones_like(eta)
    if family == "binomial":
        mu = special.expit(eta)
        return mu, mu * (1 - mu), mu * (1 - mu)
    mu = np.exp(eta)
    return mu, mu, mu


def _link(family: str, mu: np.ndarray) -> np.ndarray:
    if family == "gaussian":
        return mu
    if family == "binomial":
        return np.asarray(special.logit(mu))
    return np.log(mu)


def _deviance(family: str, y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> float:
    if family == "gaussian":
        return float(np.sum(w * (y - mu) ** 2))
    if family == "binomial":
        return float(np.sum(2 * w * (special.xlogy(y, y / mu)
                                     + special.xlogy(1 - y, (1 - y) / (1 - mu)))))
    return float(np.sum(2 * w * (special.xlogy(y, y / mu) - (y - mu))))


def _loglike(family: str, y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> float:
    """Scale-1 log-likelihood of binomial and poisson (gaussian is finished at the hub)."""
    if family == "binomial":
        return float(np.sum(w * (y * np.log((mu + 1e-20) / (1 - mu + 1e-20))
                                 + np.log(1 - mu + 1e-20)
                                 - special.gammaln(y + 1) - special.gammaln(2 - y))))
    if family == "poisson":
        return float(np.sum(w * (y * np.log(mu) - mu - special.gammaln(y + 1))))
    return 0.0


def _xtwx_bound(family: str, xtwx: np.ndarray) -> float | None:
    """A bound on |X'WX entries| of every node in every later IRLS round, from the network
    X'WX of the first IRLS round (round 2), or None when the family has none.

    Each node's X'WX is positive semi-definite, so its entries are bounded by its largest
    diagonal entry, which is at most the network's. Gaussian weights never change; binomial
    ones are w·μ(1−μ) ∈ [0.1875 w, 0.25 w] in round 2 (μ = (y + ½)/2) and ≤ 0.25 w later, so
    later diagonals are at most 4/3 of round 2's. Poisson weights are unbounded. A 1 % margin
    covers floating-point rounding.
    """
    top = float(np.max(np.diag(xtwx))) if xtwx.size else 0.0
    if top <= 0 or not np.isfinite(top):
        return None
    factor = {"gaussian": 1.0, "binomial": 0.25 / 0.1875}.get(family)
    return None if factor is None else top * factor * 1.01


class Glm(Analysis):
    name = "glm"
    title = "Generalised linear model (exact pooled fit)"
    params_model = GlmParams
    requires_cohort = False
    uses_table = True
    max_rounds = 60
    secure = True

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, GlmParams)
        levels = (round_input or {}).get("levels")
        y, X, offset, w, columns, local_levels = _design(ctx, params, levels)
        n, p = X.shape
        ctx.records_used = n
        if p / n > MAX_PARAM_RATIO:
            raise Refused(f"{p} parameters for {n} rows is near-saturated "
                          f"(ratio above {MAX_PARAM_RATIO}); the GLM is refused")
        if params.family == "binomial" and np.any((y < 0) | (y > 1)):
            raise InvalidInput("a binomial response must lie in [0, 1]", field="params.formula")
        if params.family == "poisson" and np.any(y < 0):
            raise InvalidInput("a poisson response must be non-negative", field="params.formula")
        if np.any(w <= 0):
            raise InvalidInput("weights must be positive", field="params.weights")
        if round_input is None:
            return {"n": n, "levels": {k: _sort_levels(v) for k, v in local_levels.items()},
                    "sum_y": float(np.sum(y))}
        family = params.family
        if round_input.get("beta") is None:
            ybar = float(round_input["ybar"])
            mu = (y + 0.5) / 2 if family == "binomial" else (y + ybar) / 2
            eta = _link(family, mu)
        else:
            beta = decode_array(round_input["beta"])
            eta = X @ beta + offset
        mu, dmu, var = _family_terms(family, y, eta)
        iw = w * dmu**2 / var
        z = (eta - offset) + (y - mu) / dmu
        return {
            "n": n,
            "columns": columns,
            "xtwx": encode_array(X.T @ (iw[:, None] * X)),
            "xtwz": encode_array(X.T @ (iw * z)),
            "deviance": _deviance(family, y, mu, w),
            "pearson": float(np.sum(w * (y - mu) ** 2 / var)),
            "llf": _loglike(family, y, mu, w),
            "sum_log_w": float(np.sum(np.log(w))),
        }

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, GlmParams)
        if not partials:
            raise Refused("no site took part in the GLM")
        names = sorted(partials)
        if round == 1:
            merged: dict[str, list[Any]] = defaultdict(list)
            for name in names:
                for term, lv in partials[name]["levels"].items():
                    merged[term].extend(lv)
            levels = {term: _sort_levels(lv) for term, lv in merged.items()}
            n = sum(int(partials[s]["n"]) for s in names)
            ybar = sum(float(partials[s]["sum_y"]) for s in names) / n
            return NextRound({"levels": levels, "beta": None, "ybar": ybar},
                             {"levels": levels, "iterations": 0, "deviance": None})
        columns = partials[names[0]]["columns"]
        if any(partials[s]["columns"] != columns for s in names):
            raise InvalidInput("sites built different design matrices; check column types",
                               field="params.formula")
        xtwx = np.sum([decode_array(partials[s]["xtwx"]) for s in names], axis=0)
        xtwz = np.sum([decode_array(partials[s]["xtwz"]) for s in names], axis=0)
        dev = sum(float(partials[s]["deviance"]) for s in names)
        levels = state["levels"]
        if state.get("final"):
            return Final(self._result(partials, params, state, np.asarray(xtwx)))
        try:
            beta = np.linalg.solve(xtwx, xtwz)
        except np.linalg.LinAlgError:
            raise InvalidInput("the design matrix is singular (collinear terms?)",
                               field="params.formula") from None
        if np.linalg.matrix_rank(xtwx) < len(columns):
            raise InvalidInput("the design matrix is rank-deficient (collinear terms?)",
                               field="params.formula")
        iterations = int(state["iterations"]) + 1
        old_dev = state.get("deviance")
        old_beta = state.get("beta")
        converged = False
        if old_dev is not None:
            converged = abs(dev - old_dev) <= params.tol * (abs(dev) + params.tol)
        if old_beta is not None:
            prev = np.asarray(old_beta)
            converged = converged or bool(
                np.max(np.abs(beta - prev)) <= params.tol * (1 + np.max(np.abs(beta)))
            )
        new_state = {"levels": levels, "iterations": iterations, "deviance": dev,
                     "beta": beta.tolist(), "columns": columns}
        if converged or iterations >= params.max_iter:
            new_state["final"] = True
            new_state["converged"] = converged
        return NextRound({"levels": levels, "beta": encode_array(beta)}, new_state)

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        """Levels travel in clear (they name categories, never persons); n, sums, X'WX, X'Wz,
        deviance, Pearson χ² and log-likelihood terms are masked."""
        partial = self.local(ctx, params, round_input)
        if round_input is None:
            return Summable({"levels": partial["levels"]},
                            {"n": np.asarray([partial["n"]]),
                             "sum_y": np.asarray([partial["sum_y"]])},
                            frozenset({"n"}))
        sums = {"n": np.asarray([partial["n"]]),
                "xtwx": decode_array(partial["xtwx"]), "xtwz": decode_array(partial["xtwz"])}
        for key in _SCALARS:
            sums[key] = np.asarray([partial[key]])
        compact = {label: int(f) for label, f in (round_input.get("secure_scales") or {}).items()
                   if label == "xtwx"}
        return Summable({"columns": partial["columns"]}, sums, frozenset({"n"}), compact)

    def combine_secure(
        self,
        sums: Mapping[str, np.ndarray],
        publics: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        """The network sums as one pooled partial; per-site row counts are not released."""
        assert isinstance(params, GlmParams)
        names = sorted(publics)
        pooled: dict[str, Any] = {"n": int(sums["n"][0])}
        if round == 1:
            pooled["levels"] = {}
            for name in names:
                for term, lv in publics[name]["levels"].items():
                    pooled["levels"].setdefault(term, []).extend(lv)
            pooled["sum_y"] = float(sums["sum_y"][0])
        else:
            columns = publics[names[0]]["columns"]
            if any(publics[s]["columns"] != columns for s in names):
                raise InvalidInput("sites built different design matrices; check column types",
                                   field="params.formula")
            pooled.update(columns=columns, xtwx=encode_array(np.asarray(sums["xtwx"])),
                          xtwz=encode_array(np.asarray(sums["xtwz"])))
            pooled.update({key: float(sums[key][0]) for key in _SCALARS})
        outcome = self.combine({"network": pooled}, params, state, round)
        if isinstance(outcome, Final):
            result = dict(outcome.result)
            result["sites"] = dict.fromkeys(names)  # withheld: only the total is known
            result["secure_aggregation"] = True
            return Final(result)
        bound = state.get("xtwx_bound")
        if round == 2 and "xtwx" in sums:
            bound = _xtwx_bound(params.family, np.asarray(sums["xtwx"]))
        if bound:
            outcome.state["xtwx_bound"] = bound  # combine rebuilds its state every round
            # Every later X'WX entry of every node is below the bound: the compact ring holds it.
            outcome.round_input["secure_scales"] = {"xtwx": compact_scale(bound, len(names))}
        return outcome

    @staticmethod
    def _result(
        partials: Mapping[str, dict[str, Any]], params: GlmParams, state: dict[str, Any],
        xtwx: np.ndarray,
    ) -> dict[str, Any]:
        names = sorted(partials)
        columns: list[str] = state["columns"]
        beta = np.asarray(state["beta"])
        n = sum(int(partials[s]["n"]) for s in names)
        p = len(columns)
        df_resid = n - p
        dev = sum(float(partials[s]["deviance"]) for s in names)
        pearson = sum(float(partials[s]["pearson"]) for s in names)
        if params.family == "gaussian":
            scale = pearson / df_resid if df_resid > 0 else math.nan
            s2 = dev / n
            sum_log_w = sum(float(partials[s]["sum_log_w"]) for s in names)
            llf = -0.5 * (dev / s2 + n * math.log(s2) - sum_log_w + n * math.log(2 * math.pi))
        else:
            scale = 1.0
            llf = sum(float(partials[s]["llf"]) for s in names)
        cov = scale * np.linalg.inv(xtwx)
        bse = np.sqrt(np.diag(cov))
        z = beta / bse
        pvalues = 2 * stats.norm.sf(np.abs(z))
        q = stats.norm.ppf(0.975)
        return {
            "family": params.family,
            "params": dict(zip(columns, beta.tolist(), strict=True)),
            "bse": dict(zip(columns, bse.tolist(), strict=True)),
            "zvalues": dict(zip(columns, z.tolist(), strict=True)),
            "pvalues": dict(zip(columns, pvalues.tolist(), strict=True)),
            "conf_int": {c: [float(b - q * s), float(b + q * s)]
                         for c, b, s in zip(columns, beta, bse, strict=True)},
            "deviance": dev,
            "pearson_chi2": pearson,
            "scale": scale,
            "llf": llf,
            "aic": -2 * llf + 2 * p,
            "df_resid": df_resid,
            "nobs": n,
            "iterations": int(state["iterations"]),
            "converged": bool(state.get("converged", False)),
            "sites": {s: int(partials[s]["n"]) for s in names},
        }


register(Glm())
