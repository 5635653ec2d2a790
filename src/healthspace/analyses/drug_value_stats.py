"""The drug value analysis' statistics: ratio estimators, the ICER and its delta-method CI.

Pure functions of the additive per-arm sums (docs/payer.md#drug-value). For person i of an arm
with cost c_i, follow-up t_i (years) and event indicator e_i, the arm's sums are
n, Σc, Σc², Σt, Σt², Σct, Σe, Σet, Σec (Σe² = Σe). Cost per patient-year μ = Σc/Σt and
events per patient-year λ = Σe/Σt are ratio estimators; their covariance comes from the
delta method on the arm's means (c̄, t̄, ē), whose covariance is S/n (S the sample covariance,
denominator n − 1). Arms are independent samples. ICER = (μ_T − μ_C) / (λ_C − λ_T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:  # the analysis imports this module; its params are only a type here
    from healthspace.analyses.drug_value import DrugValueParams

DAYS_PER_YEAR = 365.25
SUMS = ("cost", "cost2", "time", "time2", "cost_time", "events_time", "events_cost")


def person_sums(cost: np.ndarray, days: np.ndarray, events: np.ndarray) -> np.ndarray:
    """The additive sums (in :data:`SUMS` order) of one arm's persons; time in years."""
    c = np.asarray(cost, dtype=np.float64)
    t = np.asarray(days, dtype=np.float64) / DAYS_PER_YEAR
    e = np.asarray(events, dtype=np.float64)
    return np.array([c.sum(), c @ c, t.sum(), t @ t, c @ t, e @ t, e @ c])


@dataclass(frozen=True)
class Arm:
    """One arm's network totals: persons, events, and the means and their covariance."""

    n: int
    events: int
    mean: np.ndarray  # (c̄, t̄, ē)
    cov: np.ndarray  # 3 × 3 covariance of the means

    @classmethod
    def from_sums(cls, n: int, events: int, sums: np.ndarray) -> Arm:
        s = dict(zip(SUMS, np.asarray(sums, dtype=np.float64), strict=True))
        mean = np.array([s["cost"], s["time"], events]) / n
        second = np.array([[s["cost2"], s["cost_time"], s["events_cost"]],
                           [s["cost_time"], s["time2"], s["events_time"]],
                           [s["events_cost"], s["events_time"], events]])
        sample = (second - n * np.outer(mean, mean)) / (n - 1) if n > 1 else np.zeros((3, 3))
        return cls(int(n), int(events), mean, sample / n)

    @property
    def person_years(self) -> float:
        return float(self.mean[1] * self.n)

    def rates(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ, λ) per patient-year and their 2 × 2 delta-method covariance."""
        c, t, e = self.mean
        mu, lam = c / t, e / t
        jac = np.array([[1 / t, -mu / t, 0.0], [0.0, -lam / t, 1 / t]])
        return np.array([mu, lam]), jac @ self.cov @ jac.T


def interval(estimate: float, var: float, z: float, scale: float = 1.0) -> dict[str, Any]:
    """``{estimate, se, ci}`` of a normal approximation, scaled (e.g. per 100 patient-years)."""
    se = math.sqrt(max(float(var), 0.0)) * scale
    value = float(estimate) * scale
    return {"estimate": value, "se": se, "ci": [value - z * se, value + z * se]}


def icer(treated: Arm, comparator: Arm, z: float) -> dict[str, Any]:
    """The ICER's ratio and delta-method SE, its quadrant and, when it means something, its
    estimate and CI; ``note`` says why a value is missing."""
    (mu_t, lam_t), v_t = treated.rates()
    (mu_c, lam_c), v_c = comparator.rates()
    d_cost, avoided = mu_t - mu_c, lam_c - lam_t
    var_avoided = v_t[1, 1] + v_c[1, 1]
    out: dict[str, Any] = {"ratio": None, "se": None, "estimate": None, "ci": None,
                           "quadrant": _quadrant(d_cost, avoided), "note": None}
    if avoided == 0:
        out["note"] = "no difference in event rates: the ICER is undefined"
        return out
    ratio = float(d_cost / avoided)
    g_t = np.array([1 / avoided, ratio / avoided])
    g_c = np.array([-1 / avoided, -ratio / avoided])
    se = math.sqrt(max(float(g_t @ v_t @ g_t + g_c @ v_c @ g_c), 0.0))
    out.update(ratio=ratio, se=se)
    if out["quadrant"] in ("dominant", "dominated"):
        out["note"] = (f"the treatment is {out['quadrant']} (point estimates): a negative "
                       f"ratio is not a price per event avoided, so no ICER is given")
        return out
    out["estimate"] = ratio
    if abs(avoided) <= z * math.sqrt(max(var_avoided, 0.0)):
        out["note"] = ("the CI of events avoided per patient-year includes 0, so the ICER's "
                       "interval is unbounded (it crosses infinity): no CI is given; read the "
                       "cost and effect differences and their CIs instead")
        return out
    out["ci"] = [ratio - z * se, ratio + z * se]
    return out


def _quadrant(d_cost: float, avoided: float) -> str:
    """Where the point estimate lies on the cost-effectiveness plane."""
    if avoided > 0:
        return "more costly, more effective" if d_cost > 0 else "dominant"
    if avoided < 0:
        return "less costly, less effective" if d_cost < 0 else "dominated"
    return "no difference in effect"


INTERPRETATION = {
    "more costly, more effective": "extra {cur} spent per event avoided",
    "less costly, less effective": "{cur} saved per extra event",
    "dominant": "cheaper and fewer events: the treatment dominates",
    "dominated": "costlier and more events: the treatment is dominated",
    "no difference in effect": "no difference in event rates",
}
DEFINITIONS = {
    "person_years": "Σ duration (days) / 365.25 over the arm's persons",
    "cost_per_py": "Σ cost / Σ person-years (ratio estimator), delta-method CI",
    "events_per_100py": "100 · Σ events / Σ person-years (ratio estimator), delta-method CI",
    "delta_cost_per_py": "cost per patient-year, treatment − comparator",
    "events_avoided_per_100py": "events per 100 patient-years, comparator − treatment",
    "icer": "Δ cost per patient-year / events avoided per patient-year ({cur} per event "
            "avoided); delta-method CI from the arms' additive sums",
    "hazard_ratio": "Cox proportional hazards, treatment vs comparator (exact pooled fit)",
}
CAVEATS = [
    "Observational comparison: arms are not randomised; adjust the Cox model for confounders "
    "and read the cost difference as unadjusted.",
    "Cost and person-time cover the same follow-up only when the cost column stops at the "
    "outcome (a cost covariate with until_outcome: true).",
    "Rates assume a constant hazard over follow-up; the Kaplan–Meier curves show whether it is.",
    "The ICER's delta-method CI is symmetric and unreliable when the effect difference is "
    "small relative to its SE; it is not given when the effect's CI includes 0.",
]


def _survival_at(curve: dict[str, Any], horizon: float | None) -> dict[str, Any] | None:
    """The KM step function at ``horizon`` (days) with its pointwise CI; None past the curve."""
    timeline = curve["timeline"]
    if horizon is None or horizon > timeline[-1]:
        return None
    i = int(np.searchsorted(timeline, horizon, side="right")) - 1
    return {"estimate": curve["survival"][i], "ci": [curve["ci_lower"][i], curve["ci_upper"][i]]}


def _cox_summary(cox: dict[str, Any], treated: str, covariates: list[str],
                 z: float) -> dict[str, Any]:
    def term(name: str) -> dict[str, Any]:
        beta, se = cox["params"][name], cox["bse"][name]
        return {"hazard_ratio": math.exp(beta), "ci": [math.exp(beta - z * se),
                                                       math.exp(beta + z * se)],
                "log_hr": beta, "se": se, "p": cox["pvalues"][name]}

    return _with_total(cox, {**term(treated), "adjusted_for": covariates,
            "covariates": {name: term(name) for name in covariates},
            "nobs": cox["nobs"], "n_events": cox["n_events"], "ties": cox["ties"],
            "concordance": cox["concordance"], "iterations": cox["iterations"],
            "log_likelihood": cox["log_likelihood"], "coarsened": cox["coarsened"]})


def _arm_entry(role: str, arm: Arm, curve: dict[str, Any] | None, withheld: bool, k: int,
               z: float, horizon: float | None) -> dict[str, Any]:
    (mu, lam), cov = arm.rates()
    return {
        "role": role, "persons": arm.n, "events": arm.events if arm.events >= k else f"<{k}",
        "person_years": arm.person_years, "mean_follow_up_years": float(arm.mean[1]),
        "cost_per_patient": float(arm.mean[0]),
        "cost_per_py": interval(mu, cov[0, 0], z),
        "events_per_100py": None if withheld else interval(lam, cov[1, 1], z, 100.0),
        "median_survival_days": curve["median"] if curve else None,
        "survival_at_horizon": _survival_at(curve, horizon) if curve else None,
    }


def _comparison(arms: list[Arm], at_horizon: list[float | None], withheld: bool, z: float,
                currency: str) -> dict[str, Any]:
    """Treatment minus comparator: cost, event rates, survival at the horizon, the ICER."""
    (mu_t, lam_t), v_t = arms[0].rates()
    (mu_c, lam_c), v_c = arms[1].rates()
    out: dict[str, Any] = {
        "delta_cost_per_py": interval(mu_t - mu_c, v_t[0, 0] + v_c[0, 0], z),
        "delta_events_per_100py": None, "events_avoided_per_100py": None,
        "survival_difference_at_horizon": None, "icer": None,
    }
    if withheld:
        return out
    var = v_t[1, 1] + v_c[1, 1]
    out.update(delta_events_per_100py=interval(lam_t - lam_c, var, z, 100.0),
               events_avoided_per_100py=interval(lam_c - lam_t, var, z, 100.0))
    if at_horizon[0] is not None and at_horizon[1] is not None:
        out["survival_difference_at_horizon"] = at_horizon[0] - at_horizon[1]
    found = icer(arms[0], arms[1], z)
    found["interpretation"] = INTERPRETATION[found["quadrant"]].format(cur=currency)
    out["icer"] = {**found, "unit": f"{currency} per event avoided"}
    return out


def _with_total(part: dict[str, Any], keep: dict[str, Any]) -> dict[str, Any]:
    """``keep`` plus the part's network coarsened total, present under secure aggregation."""
    return {**keep, **({"coarsened_total": part["coarsened_total"]}
                       if "coarsened_total" in part else {})}


def result(params: DrugValueParams, state: dict[str, Any], *, treated: str) -> dict[str, Any]:
    """The released result from the combined state (see docs/payer.md#drug-value)."""
    k, z = int(state["k"]), float(stats.norm.ppf(1 - params.alpha / 2))
    counts, sums = np.asarray(state["counts"]), np.asarray(state["sums"])
    arms = [Arm.from_sums(int(n), int(e), s) for (n, e), s in zip(counts, sums, strict=True)]
    withheld = state.get("withheld")
    km = None if withheld else state["results"]["km"]
    cox = None if withheld else state["results"]["cox"]
    per_arm = {value: _arm_entry(role, arm, km["groups"].get(value) if km else None,
                                 bool(withheld), k, z, params.horizon_days)
               for role, value, arm in zip(("treatment", "comparator"), params.arms, arms,
                                           strict=True)}
    at = [(per_arm[v]["survival_at_horizon"] or {}).get("estimate") for v in params.arms]
    cur = params.currency
    out: dict[str, Any] = {
        "analysis": "drug_value", "arm_column": params.arm, "treatment": params.treatment,
        "comparator": params.comparator, "currency": cur, "alpha": params.alpha,
        "horizon_days": params.horizon_days, "min_cell_size": k,
        "nobs": int(counts[:, 0].sum()), "sites": state["sites"], "arms": per_arm,
        "logrank": None if km is None else {"statistic": km["logrank_statistic"],
                                            "p": km["logrank_p"]},
        "cox": None if cox is None else _cox_summary(cox, treated, params.covariates, z),
        "comparison": _comparison(arms, at, bool(withheld), z, cur),
        "km": None if km is None else _with_total(km, {"groups": km["groups"],
                                                       "coarsened": km["coarsened"]}),
        "withheld": withheld,
        "definitions": {key: text.format(cur=cur) for key, text in DEFINITIONS.items()},
        "caveats": CAVEATS,
    }
    if state.get("secure_aggregation"):
        out["secure_aggregation"] = True
    return out
