"""drug_value: KM, log-rank and Cox against lifelines, cost rates and the ICER against an
independent pandas computation, the delta method against a numerical gradient, disclosure
control, parameter errors, the cost covariate of analysis datasets, and the report."""

from __future__ import annotations

import itertools
import json
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from scipy import stats

from healthspace.analyses.base import LocalContext
from healthspace.analyses.drug_value_stats import Arm, icer, person_sums
from healthspace.cdm.store import create_schema
from healthspace.cli.main import run
from healthspace.cohort.dataset import build_analysis_table, load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.core.errors import InvalidInput, Refused
from healthspace.payer.value_report import write_report
from healthspace.sim import simulate_tables

TOL = 1e-9
YEAR = 365.25
PARAMS = {"arm": "arm", "treatment": "new", "comparator": "old", "duration": "time",
          "event": "event", "cost": "cost", "covariates": ["x"], "horizon_days": 365}
SECURE = pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])


def make_data(seed: int = 5, n: int = 900, new_rate: float = 0.0006) -> pd.DataFrame:
    """Integer days (ties), administrative censoring at day 1500 (no site needs coarsening),
    costs that grow with follow-up and are higher on the new drug."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(["new", "old"], n, p=[0.4, 0.6])
    x = rng.normal(size=n)
    rate = np.where(arm == "new", new_rate, 0.001) * np.exp(0.3 * x)
    onset = rng.exponential(1 / rate)
    censor = np.minimum(rng.uniform(200, 3000, n), 1500)
    days = np.ceil(np.minimum(onset, censor))
    cost = rng.gamma(2.0, 3000, n) * (0.2 + days / YEAR) * np.where(arm == "new", 1.3, 1.0)
    return pd.DataFrame({"arm": arm, "time": days, "event": (onset <= censor).astype(int),
                         "cost": cost.round(2), "x": x})


def write_sites(tmp_path, df, bounds=(0, 250, 550, None)):
    paths = {}
    for name, lo, hi in zip("ABC", bounds[:-1], bounds[1:], strict=True):
        paths[name] = tmp_path / f"{name}.csv"
        df.iloc[lo:hi].to_csv(paths[name], index=False)
    return paths


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def results(data, tmp_path_factory):
    paths = write_sites(tmp_path_factory.mktemp("sites"), data)
    return {secure: simulate_tables("drug_value", paths, params=PARAMS, secure=secure)
            for secure in (False, True)}


# --- independent references on the pooled rows ------------------------------------------------


def pandas_rates(part: pd.DataFrame) -> dict[str, float]:
    """Ratio estimators and their linearised variances, written from the textbook form
    Var(ΣY/ΣT) ≈ Σ(y − R·t)² / (n (n − 1) t̄²)."""
    t, c, e = part.time / YEAR, part.cost, part.event
    n, tbar = len(part), t.mean()
    mu, lam = c.sum() / t.sum(), e.sum() / t.sum()
    dc, de = c - mu * t, e - lam * t
    scale = n * (n - 1) * tbar**2
    return {"n": n, "events": int(e.sum()), "py": t.sum(), "mu": mu, "lam": lam,
            "var_mu": (dc**2).sum() / scale, "var_lam": (de**2).sum() / scale}


def numerical_delta(parts: list[pd.DataFrame], f) -> float:
    """SE of f(means of (cost, years, event) per arm) by central differences and the pandas
    covariance of each arm's means."""
    means, covs = [], []
    for part in parts:
        cols = np.c_[part.cost, part.time / YEAR, part.event]
        means.append(cols.mean(axis=0))
        covs.append(np.cov(cols.T, ddof=1) / len(part))
    m = np.concatenate(means)
    grad = np.zeros(len(m))
    for i in range(len(m)):
        h = 1e-6 * max(abs(m[i]), 1e-3)
        up, down = m.copy(), m.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    cov = np.zeros((len(m), len(m)))
    for j, block in enumerate(covs):
        cov[3 * j:3 * j + 3, 3 * j:3 * j + 3] = block
    return float(np.sqrt(grad @ cov @ grad))


def icer_of(m: np.ndarray) -> float:
    ct, tt, et, cc, tc, ec = m
    return (ct / tt - cc / tc) / (ec / tc - et / tt)


def as_float(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# --- exactness ----------------------------------------------------------------------------


@SECURE
def test_km_and_logrank_equal_lifelines(results, data, secure):
    result = results[secure]
    assert result.get("secure_aggregation", False) is secure
    assert (result["km"]["coarsened_total"] if secure
            else sum(result["km"]["coarsened"].values())) == 0
    for value in ("new", "old"):
        part = data[data.arm == value]
        kmf = KaplanMeierFitter().fit(part.time, part.event)
        curve = result["km"]["groups"][value]
        assert curve["timeline"] == list(kmf.survival_function_.index)
        assert np.max(np.abs(as_float(curve["survival"])
                             - kmf.survival_function_.iloc[:, 0].to_numpy())) <= TOL
        ci = kmf.confidence_interval_.to_numpy()
        assert np.max(np.abs(as_float(curve["ci_lower"]) - ci[:, 0])) <= TOL
        assert curve["at_risk"] == [int(a) for a in kmf.event_table["at_risk"]]
        at = result["arms"][value]["survival_at_horizon"]["estimate"]
        assert abs(at - float(kmf.survival_function_at_times(365).iloc[0])) <= TOL
    a, b = data[data.arm == "new"], data[data.arm == "old"]
    ref = logrank_test(a.time, b.time, a.event, b.event)
    assert abs(result["logrank"]["p"] - ref.p_value) <= TOL
    assert abs(result["logrank"]["statistic"] - ref.test_statistic) <= TOL


@SECURE
def test_adjusted_cox_hazard_ratio_equals_lifelines(results, data, secure):
    cox = results[secure]["cox"]
    frame = data.assign(treated=(data.arm == "new").astype(int))[["time", "event", "treated",
                                                                   "x"]]
    ref = CoxPHFitter().fit(frame, "time", "event",
                            fit_options={"precision": 1e-14, "r_precision": 1e-16,
                                         "max_steps": 500})
    assert abs(cox["log_hr"] - ref.params_["treated"]) <= 1e-8
    assert abs(cox["se"] - ref.standard_errors_["treated"]) <= 1e-8
    assert abs(cox["covariates"]["x"]["log_hr"] - ref.params_["x"]) <= 1e-8
    lo, hi = np.exp(ref.confidence_intervals_.loc["treated"].to_numpy())
    assert cox["ci"] == pytest.approx([lo, hi], rel=1e-7)
    assert cox["adjusted_for"] == ["x"] and cox["nobs"] == len(data)


@SECURE
def test_cost_rates_and_icer_equal_pandas_and_numerical_delta(results, data, secure):
    result = results[secure]
    z = stats.norm.ppf(0.975)
    parts = [data[data.arm == "new"], data[data.arm == "old"]]
    ref = [pandas_rates(p) for p in parts]
    for value, r in zip(("new", "old"), ref, strict=True):
        arm = result["arms"][value]
        assert arm["persons"] == r["n"] and arm["events"] == r["events"]
        assert arm["person_years"] == pytest.approx(r["py"], rel=1e-12)
        assert arm["cost_per_py"]["estimate"] == pytest.approx(r["mu"], rel=1e-12)
        assert arm["cost_per_py"]["se"] == pytest.approx(np.sqrt(r["var_mu"]), rel=1e-9)
        assert arm["events_per_100py"]["estimate"] == pytest.approx(100 * r["lam"], rel=1e-12)
        assert arm["events_per_100py"]["se"] == pytest.approx(100 * np.sqrt(r["var_lam"]),
                                                              rel=1e-9)
    cmp = result["comparison"]
    d_cost = ref[0]["mu"] - ref[1]["mu"]
    assert cmp["delta_cost_per_py"]["estimate"] == pytest.approx(d_cost, rel=1e-12)
    assert cmp["delta_cost_per_py"]["se"] == pytest.approx(
        np.sqrt(ref[0]["var_mu"] + ref[1]["var_mu"]), rel=1e-9)
    avoided = ref[1]["lam"] - ref[0]["lam"]
    assert cmp["events_avoided_per_100py"]["estimate"] == pytest.approx(100 * avoided,
                                                                        rel=1e-12)
    found = cmp["icer"]
    assert found["quadrant"] == "more costly, more effective"
    assert found["estimate"] == pytest.approx(d_cost / avoided, rel=1e-12)
    se = numerical_delta(parts, icer_of)
    assert found["se"] == pytest.approx(se, rel=1e-6)
    assert found["ci"] == pytest.approx([found["estimate"] - z * se,
                                         found["estimate"] + z * se], rel=1e-6)
    for value, part in zip(("new", "old"), parts, strict=True):  # one arm's ratio, too
        se_mu = numerical_delta([part], lambda m: m[0] / m[1])
        assert result["arms"][value]["cost_per_py"]["se"] == pytest.approx(se_mu, rel=1e-6)


def test_secure_equals_plain_and_per_site_counts_only_in_clear(results):
    plain, secure = results[False], results[True]
    assert plain["sites"] == {"A": 250, "B": 300, "C": 350}
    assert secure["sites"] == dict.fromkeys("ABC") and secure["nobs"] == 900
    flat = lambda r: pd.json_normalize(r["comparison"], sep=".").iloc[0]  # noqa: E731
    a, b = flat(plain), flat(secure)
    numeric = [k for k in a.index if isinstance(a[k], float)]
    assert max(abs(a[k] - b[k]) / max(1.0, abs(a[k])) for k in numeric) <= 1e-12


# --- the delta method's own cases ---------------------------------------------------------------


def arm(n, events, cost, days, seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.5, 1.5, n) * days
    e = np.zeros(n, int)
    e[:events] = 1
    return Arm.from_sums(n, events, person_sums(rng.gamma(2, cost / 2, n), t, e))


def test_icer_ci_is_not_given_when_the_effect_ci_includes_zero():
    found = icer(arm(200, 20, 5000, 700, 1), arm(200, 22, 4000, 700, 2), 1.96)
    assert found["estimate"] is not None and found["ci"] is None
    assert "includes 0" in found["note"]


@pytest.mark.parametrize("cost, events, quadrant", [
    (3000, 10, "dominant"), (6000, 60, "dominated"),
    (3000, 60, "less costly, less effective")])
def test_icer_quadrants(cost, events, quadrant):
    found = icer(arm(400, events, cost, 700, 1), arm(400, 35, 4500, 700, 2), 1.96)
    assert found["quadrant"] == quadrant
    assert (found["estimate"] is None) is (quadrant in ("dominant", "dominated"))
    assert found["ratio"] is not None and found["se"] > 0


# --- disclosure control and errors ------------------------------------------------------------


def test_a_small_arm_at_a_site_is_refused_there(tmp_path, data):
    small = pd.concat([data.iloc[:300], data.iloc[300:600][lambda d: d.arm == "old"],
                       data.iloc[300:600][lambda d: d.arm == "new"].iloc[:5]])
    paths = write_sites(tmp_path, small, (0, 300, len(small) - 5 - 100, None))
    with pytest.raises(Refused) as refused:
        simulate_tables("drug_value", paths, params=PARAMS)
    assert "new" in refused.value.message and "minimum cell size" in refused.value.message


def test_few_events_in_an_arm_withhold_every_outcome(tmp_path):
    df = make_data(new_rate=0.00001)
    assert 0 < df[df.arm == "new"].event.sum() < 10
    result = simulate_tables("drug_value", write_sites(tmp_path, df), params=PARAMS)
    new = result["arms"]["new"]
    assert new["events"] == "<10" and new["events_per_100py"] is None
    assert new["median_survival_days"] is None and new["survival_at_horizon"] is None
    assert result["km"] is None and result["cox"] is None and result["logrank"] is None
    assert result["comparison"]["icer"] is None and "fewer than 10 events" in result["withheld"]
    assert result["comparison"]["delta_cost_per_py"]["estimate"] > 0  # costs stay released
    assert result["arms"]["old"]["events"] == int(df[df.arm == "old"].event.sum())
    files = write_report(result, tmp_path / "report")
    assert [p.name for p in files.plots] == ["cost_per_patient_year.png"]
    assert "withheld" in files.markdown.read_text()


@pytest.mark.parametrize("change, field", [
    ({"comparator": "new"}, "params.comparator"),
    ({"cost": "price"}, "params.cost"),
    ({"cost": "arm"}, "params.cost"),
    ({"covariates": ["time"]}, "params.covariates"),
    ({"covariates": ["x", "x"]}, "params.covariates"),
    ({"alpha": 0.7}, "params.alpha"),
    ({"horizon_days": 0}, "params.horizon_days"),
    ({"treatment": "none"}, "params.treatment"),
    ({"colour": "red"}, "params.colour"),
])
def test_bad_params_name_the_field(tmp_path, data, change, field):
    paths = write_sites(tmp_path, data)
    with pytest.raises(InvalidInput) as bad:
        simulate_tables("drug_value", paths, params={**PARAMS, **change})
    assert bad.value.field == field


def test_non_numeric_cost_names_the_field(tmp_path, data):
    paths = write_sites(tmp_path, data.assign(cost="a lot"))
    with pytest.raises(InvalidInput) as bad:
        simulate_tables("drug_value", paths, params=PARAMS)
    assert bad.value.field == "params.cost"


# --- the report and the commands --------------------------------------------------------------


def test_report_files_and_commands(tmp_path, results, data):
    files = write_report(results[True], tmp_path / "report")
    text = files.markdown.read_text()
    assert "ICER" in text and "new vs old" in text and "secure aggregation" in text
    for png in files.plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert [p.name for p in files.plots] == ["km_by_arm.png", "cost_per_patient_year.png"]
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps({**results[False], "study_id": 7, "status": "completed"}))
    assert run(["payer", "value-report", "--result", str(saved), "--out",
                str(tmp_path / "from_cli")]) == 0
    assert "(study 7)" in (tmp_path / "from_cli" / "drug_value_report.md").read_text()
    saved.write_text(json.dumps({"analysis": "km"}))
    assert run(["payer", "value-report", "--result", str(saved), "--out",
                str(tmp_path / "x")]) == 2
    paths = write_sites(tmp_path, data)
    args = ["sim", "drug-value", *[f"--table={n}={p}" for n, p in paths.items()],
            "--arm", "arm", "--treatment", "new", "--comparator", "old", "--covariates", "x",
            "--report", str(tmp_path / "sim_report"), "--json"]
    assert run(args) == 0
    assert (tmp_path / "sim_report" / "km_by_arm.png").stat().st_size > 5000


# --- the cost covariate of analysis datasets ------------------------------------------------

INDEX = date(2020, 6, 1)
VOCAB = [(102, "ICD10", "E11.9"), (150, "ICD10", "I50.9")]


class CostStore:
    """A tiny CDM: persons entering on INDEX with E11.9; days are relative to INDEX."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        create_schema(self.con)
        self.con.executemany("INSERT INTO concept (concept_id, vocabulary_id, concept_code) "
                             "VALUES (?, ?, ?)", VOCAB)
        self.ids = itertools.count(1)

    def person(self, pid, hf=None, death=None):
        self.con.execute("INSERT INTO person (person_id, year_of_birth, gender_concept_id) "
                         "VALUES (?, 1960, 8532)", [pid])
        self.con.execute("INSERT INTO observation_period VALUES (?, ?, ?, ?, NULL)",
                         [next(self.ids), pid, day(-1000), day(3000)])
        self.condition(pid, 0, 102)
        if hf is not None:
            self.condition(pid, hf, 150)
        if death is not None:
            self.con.execute("INSERT INTO death (person_id, death_date) VALUES (?, ?)",
                             [pid, day(death)])
        return self

    def condition(self, pid, when, concept):
        self.con.execute("INSERT INTO condition_occurrence (condition_occurrence_id, person_id, "
                         "condition_concept_id, condition_start_date) VALUES (?, ?, ?, ?)",
                         [next(self.ids), pid, concept, day(when)])

    def visit(self, pid, when, *charges, domain="Visit", payer=None):
        vid = next(self.ids)
        self.con.execute("INSERT INTO visit_occurrence (visit_occurrence_id, person_id, "
                         "visit_start_date) VALUES (?, ?, ?)", [vid, pid, day(when)])
        for charge in charges:
            self.con.execute("INSERT INTO cost (cost_id, cost_event_id, cost_domain_id, "
                             "total_charge, paid_by_payer) VALUES (?, ?, ?, ?, ?)",
                             [next(self.ids), vid, domain, charge, payer])
        return self

    def build(self, covariates):
        spec = {"covariates": covariates, "outcome": {
            "type": "time_to_event", "condition": {"codes": ["ICD10:I50%"]},
            "window": {"start": 1, "end": 1825}}}
        ctx = LocalContext(con=self.con, site="t",
                           cohort=load_cohort({"entry": {"condition": {"codes": ["ICD10:E11.9"]}}}))
        build_analysis_table(ctx, load_dataset(spec))
        return self.con.execute("SELECT * FROM analysis_data").df()


def day(offset):
    return INDEX + timedelta(days=offset)


def test_cost_covariate_windows_follow_up_and_amounts():
    s = CostStore()
    s.person(1, hf=200).visit(1, -10, 100).visit(1, 0, 50).visit(1, 100, 20, 5)
    s.visit(1, 200, 8).visit(1, 400, 7)  # the event's own visit counts; after it, not
    s.person(2)  # no visits: 0, never null
    s.person(3).visit(3, 500, 40, domain="Drug").visit(3, 600, None, payer=30)
    s.person(4, death=50).visit(4, 50, 9).visit(4, 60, 11)  # censored at death
    window = {"start": 0, "end": 1825}
    table = s.build([
        {"name": "until", "type": "cost", "window": window, "until_outcome": True},
        {"name": "whole", "type": "cost", "window": window},
        {"name": "fund", "type": "cost", "window": window, "amount": "paid_by_payer"},
        {"name": "before", "type": "cost", "window": {"start": None, "end": -1}},
    ])
    assert table["until"].tolist() == [83.0, 0.0, 0.0, 9.0]
    assert table["whole"].tolist() == [90.0, 0.0, 0.0, 20.0]
    assert table["fund"].tolist() == [0.0, 0.0, 30.0, 0.0]
    assert table["before"].tolist() == [100.0, 0.0, 0.0, 0.0]
    assert table["time"].tolist() == [200, 1825, 1825, 50]


def test_cost_until_outcome_needs_a_time_to_event_outcome():
    with pytest.raises(InvalidInput) as bad:
        load_dataset({"covariates": [{"name": "c", "type": "cost", "until_outcome": True,
                                      "window": {"start": 0, "end": None}}]})
    assert bad.value.field == "dataset.covariates[0].until_outcome"
    with pytest.raises(InvalidInput) as bad:
        load_dataset({"covariates": [{"name": "c", "type": "cost", "amount": "price",
                                      "window": {"start": 0, "end": None}}]})
    assert bad.value.field == "dataset.covariates[0].amount"
