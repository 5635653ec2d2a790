"""Latent person timelines for the synthetic network: who has which disease, drug and outcome when.

Times are float days since 1970-01-01; :data:`NEVER` marks an event that does not happen.
Chronic diseases follow an onset-age model (a person-specific lifetime risk and a normal onset
age), so prevalence rises with age. The outcomes that carry the built-in causal effects
(GI bleeding, heart failure, diabetic complications, death) are drawn from exponential hazards
whose multipliers are read from :data:`EFFECTS`, the same dict written to ``truth.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthspace.cdm.synth_vocab import ix

YEAR = 365.25
NEVER = 1e7  # ~ year 29,000: far beyond any window, finite so interval arithmetic stays finite
_EPOCH = np.datetime64("1970-01-01", "D")


def day(iso: str) -> int:
    """Days since 1970-01-01 of an ISO date."""
    return int((np.datetime64(iso, "D") - _EPOCH).astype(np.int64))


WINDOW_START = day("2015-01-01")
LAST_ENTRY = day("2023-06-30")
END_FROM = day("2024-01-01")
EXTRACT = day("2025-06-30")
REFERENCE = day("2025-01-01")

# Ground truth. Hazards are per year at age 60 (age = age at observation start), female, all
# listed exposures off; each ratio multiplies the hazard while its exposure is on (drugs while
# dispensed/used, diseases from their onset on). Nothing else enters these hazards, so models
# adjusting for the listed covariates recover the ratios; the hospital affects them only
# through case mix (age and comorbidity).
EFFECTS: dict[str, dict[str, Any]] = {
    "gi_bleed": {
        "outcome": "first K92.2",
        "time_origin": "observation_period_start_date",
        "baseline_rate_per_year": 0.008,
        "log_hazard_per_year_of_age": 0.04,
        "hazard_ratios": {
            "nsaid_current": 2.5,
            "warfarin_current": 2.0,
            "aspirin_current": 1.5,
            "male": 1.2,
            "ppi_current": 1.0,
        },
        "notes": "NSAIDs M01AE01/M01AB05 are dispensed as consecutive 30-day supplies, so "
        "exposure = the dispensing periods; NSAIDs stop at the first bleed. PPIs have no "
        "effect but are co-prescribed to 30% of NSAID users and given after bleeds.",
    },
    "heart_failure": {
        "outcome": "first I50.x (incident; prevalent cases at entry excluded)",
        "time_origin": "observation_period_start_date",
        "baseline_rate_per_year": 0.004,
        "log_hazard_per_year_of_age": 0.07,
        "hazard_ratios": {
            "sulfonylurea_vs_metformin": 1.5,
            "hypertension": 1.6,
            "diabetes": 1.5,
            "ckd": 1.4,
            "prior_ami": 2.0,
            "male": 1.2,
        },
        "notes": "Gliclazide A10BB09 users vs metformin A10BA02 users (and untreated "
        "diabetics, who share the metformin hazard). Treatment is confounded by indication: "
        "sulfonylurea is preferred in older people and in CKD, so the crude HR exceeds 1.5.",
    },
    "death": {
        "outcome": "death",
        "time_origin": "observation_period_start_date",
        "baseline_rate_per_year": 0.008,
        "log_hazard_per_year_of_age": 0.085,
        "hazard_ratios": {
            "sulfonylurea_vs_metformin": 1.25,
            "heart_failure": 2.5,
            "lung_cancer": 15.0,
            "ckd": 1.5,
            "male": 1.3,
        },
    },
    "diabetes_complication": {
        "outcome": "first E11.21/E11.22",
        "time_origin": "diabetes onset (first metformin/HbA1c/R73.9-or-E11 visit)",
        "baseline_rate_per_year": 0.025,
        "log_hazard_per_year_of_age": 0.02,
        "hazard_ratio_per_1pct_hba1c": 1.4,
        "reference_hba1c": 7.0,
        "notes": "HbA1c = the person's true mean level, N(7.5, 1.3); each measurement adds "
        "N(0, 0.4) noise (+0.8 before treatment starts), so regressions on measured HbA1c "
        "are slightly attenuated.",
    },
}

# Case mix: the tertiary centre (hospital_1) draws older, sicker people.
TERTIARY_RISK = 1.5
_AGE = {True: (60.0, 16.0), False: (55.0, 17.0)}


@dataclass
class People:
    """One chunk of the network's persons (global indices ``g``) and their latent timelines."""

    g: np.ndarray
    male: np.ndarray
    birth: np.ndarray  # int days
    t0: np.ndarray  # int days: observation start (first visit)
    t1: np.ndarray  # int days: observation end = min(censoring, death)
    age0: np.ndarray  # years at t0
    primary: np.ndarray  # site index 0..S-1
    secondary: np.ndarray  # second site or -1
    tertiary: np.ndarray  # primary site is hospital_1
    insured: np.ndarray
    plan: np.ndarray  # 0 employee scheme (UEBMI), 1 resident scheme (URRBMI)
    plan_start: np.ndarray  # int days
    dead: np.ndarray
    t: dict[str, np.ndarray] = field(default_factory=dict)  # event times (float days)
    a: dict[str, np.ndarray] = field(default_factory=dict)  # per-person attributes

    @property
    def n(self) -> int:
        return len(self.g)

    def on(self, key: str, idx: np.ndarray, when: np.ndarray) -> np.ndarray:
        """Whether event ``key`` has happened by the end of day ``when`` for persons ``idx``."""
        return self.t[key][idx] < when + 1


def _hr(outcome: str, name: str) -> float:
    return float(EFFECTS[outcome]["hazard_ratios"][name])


def _base_log_rate(outcome: str, age0: np.ndarray) -> np.ndarray:
    spec = EFFECTS[outcome]
    rate = float(spec["baseline_rate_per_year"]) / YEAR
    return np.log(rate) + float(spec["log_hazard_per_year_of_age"]) * (age0 - 60.0)


def piecewise_exponential(
    rng: np.random.Generator,
    origin: np.ndarray,
    log_rate: np.ndarray,
    switches: list[tuple[np.ndarray, float]],
) -> np.ndarray:
    """Event times under ``exp(log_rate)`` per day from ``origin``, times ``hr`` after each switch.

    Inverts the cumulative hazard of a piecewise-constant rate, so time-varying exposures
    change the hazard exactly by their stated ratio (vectorised over persons).
    """
    n = len(origin)
    when = np.column_stack([np.clip(t - origin, 0.0, NEVER) for t, _ in switches])
    log_hr = np.array([np.log(hr) for _, hr in switches])
    order = np.argsort(when, axis=1, kind="stable")
    starts = np.column_stack([np.zeros(n), np.take_along_axis(when, order, axis=1)])
    ends = np.column_stack([starts[:, 1:], np.full(n, 2 * NEVER)])
    rates = np.exp(
        log_rate[:, None]
        + np.column_stack([np.zeros(n), np.cumsum(log_hr[order], axis=1)])
    )
    cum = np.cumsum(rates * (ends - starts), axis=1)
    e = rng.exponential(size=n)
    k = (cum < e[:, None]).sum(axis=1)
    before = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0)[:, None], 1)[:, 0], 0)
    rate_k = np.take_along_axis(rates, k[:, None], 1)[:, 0]
    start_k = np.take_along_axis(starts, k[:, None], 1)[:, 0]
    return np.minimum(origin + start_k + (e - before) / rate_k, NEVER)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, codes: list[str], p: list[float], n: int) -> np.ndarray:
    return np.array([ix(c) for c in codes], dtype=np.int64)[rng.choice(len(codes), n, p=p)]


def simulate(
    rng: np.random.Generator, g: np.ndarray, primary: np.ndarray, secondary: np.ndarray
) -> People:
    """Draw demographics, observation windows, diseases, treatments and outcomes."""
    n = len(g)
    tert = primary == 0
    male = rng.random(n) < 0.48
    mean = np.where(tert, _AGE[True][0], _AGE[False][0])
    sd = np.where(tert, _AGE[True][1], _AGE[False][1])
    age_ref = np.clip(rng.normal(mean, sd), 20.0, 94.9)
    birth = np.floor(REFERENCE - age_ref * YEAR).astype(np.int64)
    t0 = (WINDOW_START + rng.random(n) ** 1.5 * (LAST_ENTRY - WINDOW_START)).astype(np.int64)
    late = END_FROM + rng.random(n) * (EXTRACT - END_FROM)
    early = t0 + 180 + rng.random(n) * (END_FROM - t0 - 180)
    end = np.where(rng.random(n) < 0.8, late, early).astype(np.int64)
    age0 = (t0 - birth) / YEAR
    p = People(
        g=g, male=male, birth=birth, t0=t0, t1=end, age0=age0, primary=primary,
        secondary=secondary, tertiary=tert, insured=rng.random(n) < 0.9,
        plan=(rng.random(n) < 0.45).astype(np.int8),
        plan_start=np.minimum(t0, WINDOW_START) - (rng.random(n) * 5 * YEAR).astype(np.int64),
        dead=np.zeros(n, bool),
    )
    _chronic(rng, p)
    _diabetes(rng, p)
    _treatments(rng, p)
    _outcomes(rng, p, end)
    return p


def _chronic(rng: np.random.Generator, p: People) -> None:
    """Onset-age model: lifetime risk (frailty, site case mix, comorbidity) and onset age."""
    n = p.n
    frail = np.exp(0.35 * rng.standard_normal(n) - 0.35**2 / 2)
    site = np.where(p.tertiary, TERTIARY_RISK, 1.0)

    def onset(lifetime: np.ndarray, mu: float, sd: float) -> np.ndarray:
        has = rng.random(n) < np.minimum(lifetime, 0.95)
        age = np.maximum(rng.normal(mu, sd, n), 25.0)
        return np.where(has, p.birth + age * YEAR, NEVER)

    t = p.t
    t["htn"] = onset(0.55 * frail * site, 58, 13)
    htn = t["htn"] < NEVER
    t["dm"] = onset(0.28 * frail * site * np.where(htn, 1.3, 1.0), 57, 12)
    dm = t["dm"] < NEVER
    t["ckd"] = onset(0.10 * frail * site * np.where(dm, 2.0, 1) * np.where(htn, 1.5, 1), 68, 10)
    risk_ami = 0.07 * frail * site * np.where(p.male, 1.8, 1) * np.where(dm, 1.5, 1)
    t["ami"] = onset(risk_ami * np.where(htn, 1.4, 1), 66, 11)
    t["lc"] = onset(0.025 * site * np.where(p.male, 2.0, 1.0), 66, 9)
    p.a["ckd_stage"] = rng.choice([3, 4, 5], n, p=[0.75, 0.18, 0.07])
    p.a["egfr_noise"] = rng.normal(0, 8, n)
    p.a["hf_code"] = _pick(rng, ["I50.0", "I50.9"], [0.4, 0.6], n)
    p.a["ami_code"] = _pick(rng, ["I21.0", "I21.4", "I21.9"], [0.3, 0.4, 0.3], n)
    p.a["lc_code"] = _pick(rng, ["C34.1", "C34.3", "C34.9"], [0.5, 0.3, 0.2], n)


def _diabetes(rng: np.random.Generator, p: People) -> None:
    """HbA1c level, coding delay, first-line drug (confounded by age and CKD), complications."""
    n, t = p.n, p.t
    dm = t["dm"] < NEVER
    hba1c = np.clip(rng.normal(7.5, 1.3, n), 6.0, 14.0)
    p.a["hba1c"] = hba1c
    # 40% are treated before E11 is first coded (R73.9 meanwhile): labs and drugs precede it.
    delay = np.where(rng.random(n) < 0.6, 0.0, rng.uniform(30, 300, n))
    t["dm_dx"] = np.where(dm, t["dm"] + delay, NEVER)
    age_dm = (t["dm"] - p.birth) / YEAR
    ckd_first = t["ckd"] <= t["dm"]
    su = rng.random(n) < _sigmoid(-1.3 + 0.04 * (age_dm - 60) + 1.2 * ckd_first)
    treated = dm & (rng.random(n) < 0.85)
    p.a["dm_drug"] = np.where(treated, np.where(su, 2, 1), 0).astype(np.int8)
    t["su"] = np.where(p.a["dm_drug"] == 2, t["dm"], NEVER)
    ins = dm & (rng.random(n) < _sigmoid(-2.5 + 0.8 * (hba1c - 7.5)))
    t["ins"] = np.where(ins, t["dm"] + rng.uniform(180, 2000, n), NEVER)
    p.a["ins_code"] = _pick(rng, ["A10AB01", "A10AB05"], [0.5, 0.5], n)
    spec = EFFECTS["diabetes_complication"]
    log_rate = (
        np.log(float(spec["baseline_rate_per_year"]) / YEAR)
        + float(spec["log_hazard_per_year_of_age"]) * (age_dm - 60)
        + np.log(float(spec["hazard_ratio_per_1pct_hba1c"])) * (hba1c - 7.0)
    )
    t["comp"] = np.where(dm, t["dm"] + rng.exponential(size=n) / np.exp(log_rate), NEVER)
    p.a["comp_code"] = _pick(rng, ["E11.21", "E11.22"], [0.6, 0.4], n)


def _treatments(rng: np.random.Generator, p: People) -> None:
    """Cardiovascular drugs, NSAID courses and cancer treatment."""
    n, t = p.n, p.t

    def start(*pairs: tuple[str, float]) -> np.ndarray:
        out = np.full(n, NEVER)
        for key, prob in pairs:
            out = np.minimum(out, np.where(rng.random(n) < prob, t[key], NEVER))
        return out

    t["statin"] = start(("dm", 0.5), ("ami", 0.9), ("htn", 0.2))
    t["aspirin"] = start(("ami", 0.9), ("dm", 0.2))
    p.a["statin_code"] = _pick(rng, ["C10AA01", "C10AA05"], [0.4, 0.6], n)
    aml = rng.random(n) < 0.6
    p.a["amlodipine"] = aml
    p.a["losartan"] = (rng.random(n) < 0.45) | ~aml
    p.a["erlotinib"] = rng.random(n) < 0.4
    p.a["chemo_cycles"] = np.where(rng.random(n) < 0.5, rng.integers(4, 7, n), 0)
    # NSAID courses: consecutive 30-day supplies (the exposure the GI-bleed hazard sees).
    user = rng.random(n) < _sigmoid(-1.1 + 0.025 * (p.age0 - 60))
    first = p.t0 + rng.random(n) * (p.t1 - p.t0 - 30)
    supplies = np.minimum(rng.geometric(1 / 10, n), 36)
    t["ns_start"] = np.where(user, np.floor(first), NEVER)
    t["ns_end"] = np.where(user, np.floor(first) + 30 * supplies, NEVER)
    p.a["nsaid_supplies"] = np.where(user, supplies, 0)
    p.a["nsaid_code"] = _pick(rng, ["M01AE01", "M01AB05"], [0.6, 0.4], n)
    p.a["nsaid_dx"] = _pick(rng, ["M17.9", "M54.5"], [0.65, 0.35], n)
    p.a["ppi_co"] = rng.random(n) < 0.3


def _outcomes(rng: np.random.Generator, p: People, end: np.ndarray) -> None:
    """Heart failure, warfarin, GI bleed and death from their stated hazards."""
    n, t = p.n, p.t
    t0 = p.t0.astype(float)
    before = {k: t[k] <= t0 for k in ("htn", "dm", "ckd", "ami")}
    logit = (
        -5.2 + 0.07 * (p.age0 - 60) + 0.8 * before["htn"] + 0.6 * before["dm"]
        + 0.7 * before["ckd"] + 1.0 * before["ami"] + np.log(TERTIARY_RISK) * p.tertiary
    )
    prevalent = rng.random(n) < _sigmoid(logit)
    male_hr = _hr("heart_failure", "male")
    log_rate = _base_log_rate("heart_failure", p.age0) + np.log(male_hr) * p.male
    hf = piecewise_exponential(rng, t0, log_rate, [
        (t["htn"], _hr("heart_failure", "hypertension")),
        (t["dm"], _hr("heart_failure", "diabetes")),
        (t["ckd"], _hr("heart_failure", "ckd")),
        (t["ami"], _hr("heart_failure", "prior_ami")),
        (t["su"], _hr("heart_failure", "sulfonylurea_vs_metformin")),
    ])
    t["hf"] = np.where(prevalent, t0 - rng.random(n) * 3 * YEAR, hf)
    t["warf"] = np.where(rng.random(n) < 0.25, t["hf"], NEVER)
    nsaid = _hr("gi_bleed", "nsaid_current")
    log_rate = _base_log_rate("gi_bleed", p.age0) + np.log(_hr("gi_bleed", "male")) * p.male
    t["gib"] = piecewise_exponential(rng, t0, log_rate, [
        (t["ns_start"], nsaid),
        (t["ns_end"], 1.0 / nsaid),
        (t["warf"], _hr("gi_bleed", "warfarin_current")),
        (t["aspirin"], _hr("gi_bleed", "aspirin_current")),
    ])
    log_rate = _base_log_rate("death", p.age0) + np.log(_hr("death", "male")) * p.male
    death = piecewise_exponential(rng, t0, log_rate, [
        (t["hf"], _hr("death", "heart_failure")),
        (t["lc"], _hr("death", "lung_cancer")),
        (t["ckd"], _hr("death", "ckd")),
        (t["su"], _hr("death", "sulfonylurea_vs_metformin")),
    ])
    p.dead = death < end
    t["death"] = np.where(p.dead, death, NEVER)
    p.t1 = np.where(p.dead, np.floor(death), end).astype(np.int64)
