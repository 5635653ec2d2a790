"""Real-world-evidence statistics through the real hub and node processes, against reference
implementations (statsmodels, lifelines, scipy) on the pooled data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi

import healthspace
from healthspace.analyses.base import LocalContext
from healthspace.client.studyfile import load_study_file
from healthspace.cohort.dataset import build_analysis_table, load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.privacy.survival import coarsen_times
from healthspace.sim import load_site, simulate_dirs

from .conftest import HOSPITALS, ROSSI_NODES
from .helpers import cli

pytestmark = pytest.mark.xdist_group("federation")
TOL = 1e-8


def run(live, spec):
    with live.consumer() as client:
        view = client.wait(client.submit(spec).id, timeout=300)
    assert view.status.value == "completed", (view.status, view.error,
                                              [(t.node, t.error) for t in view.tasks])
    return view


def assert_close(ours, reference, tol=TOL):
    for key, value in reference.items():
        assert abs(ours[str(key)] - float(value)) <= tol, (key, ours[str(key)], value)


SECURE = pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])


@SECURE
def test_cox_on_registry_nodes_equals_lifelines(live, secure):
    view = run(live, {"analysis": "cox", "nodes": ROSSI_NODES, "secure_aggregation": secure,
                      "params": {"duration": "week", "event": "arrest",
                                 "covariates": ["fin", "age", "prio"]}})
    assert view.secure_aggregation is secure
    assert view.result.get("secure_aggregation", False) is secure
    df = load_rossi()
    cph = CoxPHFitter().fit(df[["week", "arrest", "fin", "age", "prio"]], "week", "arrest",
                            fit_options={"precision": 1e-12})
    assert_close(view.result["params"], cph.params_)
    assert_close(view.result["bse"], cph.standard_errors_)
    assert view.result["nobs"] == len(df)
    assert view.round >= 3  # means, then Newton rounds: every round went through the nodes


@SECURE
def test_glm_on_registry_nodes_equals_statsmodels(live, secure):
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    formula = "arrest ~ fin + age + C(race) + prio"
    view = run(live, {"analysis": "glm", "nodes": ROSSI_NODES, "secure_aggregation": secure,
                      "params": {"formula": formula, "family": "binomial"}})
    assert view.result.get("secure_aggregation", False) is secure
    fit = smf.glm(formula, load_rossi(), family=sm.families.Binomial()).fit(tol=1e-12)
    assert_close(view.result["params"], fit.params)
    assert_close(view.result["bse"], fit.bse)


@SECURE
def test_km_by_group_through_the_cli_equals_lifelines(live, tmp_path, secure):
    study = tmp_path / "km.json"
    study.write_text(json.dumps({"analysis": "km", "nodes": ROSSI_NODES,
                                 "params": {"duration": "week", "event": "arrest",
                                            "group": "fin"}}))
    flags = ["--secure"] if secure else []
    submitted = json.loads(cli(live, "study", "submit", str(study), *flags, "--wait",
                               "--json").stdout)
    result = json.loads(cli(live, "study", "results", str(submitted["study_id"]), "--json").stdout)
    assert result.get("secure_aggregation", False) is secure
    df = load_rossi()
    for value, part in df.groupby("fin"):
        kmf = KaplanMeierFitter().fit(part.week, part.arrest)
        curve = result["groups"][str(value)]
        assert curve["timeline"] == list(kmf.survival_function_.index)
        assert np.max(np.abs(np.array(curve["survival"], dtype=float)
                             - kmf.survival_function_.iloc[:, 0].to_numpy())) <= 1e-10
    from lifelines.statistics import logrank_test

    a, b = df[df.fin == 0], df[df.fin == 1]
    expected = logrank_test(a.week, b.week, a.arrest, b.arrest).p_value
    assert result["logrank_p"] == pytest.approx(expected, abs=1e-10)


def test_table_analysis_on_an_omop_node_without_dataset_is_refused_per_node(live):
    with live.consumer() as client:
        view = client.wait(client.submit({
            "analysis": "km", "nodes": ["hospital_3", "rossi_a"],
            "params": {"duration": "week", "event": "arrest"}}).id, timeout=120)
    tasks = {t.node: t for t in view.tasks}
    assert tasks["rossi_a"].status.value == "completed"
    assert tasks["hospital_3"].status.value in ("refused", "failed")
    assert "analysis_data" in (tasks["hospital_3"].error or "")


# --- OMOP hospitals: cohort + analysis dataset built on each node --------------------------

EXAMPLES = Path(healthspace.__file__).parent / "examples"


def study_parts():
    spec = load_study_file(EXAMPLES / "gliclazide_hf_study.yaml")
    dataset = dict(spec.dataset or {})
    # A 0/1 exposure column, for models that need numeric covariates (Cox).
    dataset["covariates"] = [*dataset["covariates"],
                             {"name": "gliclazide", "type": "drug",
                              "codes": ["ATC:A10BB09"], "window": {"start": 0, "end": 0}}]
    return spec, spec.cohort, dataset


def pooled_tables(live, cohort, dataset) -> dict[str, pd.DataFrame]:
    """Each hospital's analysis table, built in-process from its CSV folder (the reference)."""
    tables = {}
    for name in HOSPITALS:
        site = load_site(live.data / name)
        try:
            ctx = LocalContext(con=site.con, site=name, cohort=load_cohort(cohort))
            build_analysis_table(ctx, load_dataset(dataset))
            tables[name] = site.con.execute("SELECT * FROM analysis_data").df()
        finally:
            site.con.close()
    return tables


@pytest.fixture(scope="module")
def hf(live):
    spec, cohort, dataset = study_parts()
    return spec, cohort, dataset, pooled_tables(live, cohort, dataset)


def test_example_glm_study_equals_statsmodels_on_the_pooled_tables(live, hf):
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    spec, cohort, dataset, tables = hf
    body = spec.model_dump(mode="json") | {"nodes": HOSPITALS}
    view = run(live, body)
    pooled = pd.concat(tables.values(), ignore_index=True)
    fit = smf.glm(spec.params["formula"], pooled, family=sm.families.Binomial()).fit(tol=1e-12)
    assert_close(view.result["params"], fit.params)
    assert_close(view.result["bse"], fit.bse)
    assert view.result["nobs"] == len(pooled.dropna(
        subset=["event", "drug", "age", "male", "hypertension", "ckd", "prior_mi"]))


def test_cox_over_hospitals_equals_lifelines_on_the_coarsened_pooled_tables(live, hf):
    spec, cohort, dataset, tables = hf
    covariates = ["gliclazide", "age", "male", "hypertension"]
    view = run(live, {"analysis": "cox", "nodes": HOSPITALS, "cohort": cohort,
                      "dataset": dataset,
                      "params": {"duration": "time", "event": "event",
                                 "covariates": covariates}})
    parts = []
    for name in HOSPITALS:  # the node's disclosure unit, applied to the reference too
        frame = tables[name][["time", "event", *covariates]].dropna().reset_index(drop=True)
        coarse = coarsen_times(frame["time"].to_numpy(dtype=float), 10)
        frame["time"] = coarse.times
        assert view.result["coarsened"][name] == coarse.moved
        parts.append(frame)
    pooled = pd.concat(parts, ignore_index=True)
    cph = CoxPHFitter().fit(pooled, "time", "event", fit_options={"precision": 1e-12})
    assert_close(view.result["params"], cph.params_)
    assert_close(view.result["bse"], cph.standard_errors_)
    lo, hi = view.result["conf_int"]["gliclazide"]
    assert lo < math.log(1.5) < hi  # the built-in effect (HR 1.5) lies in the 95 % CI of log HR


def test_summary_and_pv_through_the_hub_equal_simulation(live, hf):
    spec, cohort, dataset, tables = hf
    params = {"variables": ["age", "hba1c", "drug"], "crosstabs": [["drug", "event"]]}
    view = run(live, {"analysis": "summary", "nodes": HOSPITALS, "cohort": cohort,
                      "dataset": dataset, "params": params})
    sim = simulate_dirs("summary", {n: live.data / n for n in HOSPITALS}, params=params,
                        cohort=cohort, dataset=dataset)
    assert view.result == sim
    pooled = pd.concat(tables.values(), ignore_index=True)
    numeric = view.result["strata"]["all"]["numeric"]
    for column in ("age", "hba1c"):
        values = pooled[column].dropna()
        assert numeric[column]["n"] == len(values)
        assert numeric[column]["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert numeric[column]["sd"] == pytest.approx(values.std(), rel=1e-12)
    pv_params = {"drug_level": 4, "events": ["K92"]}
    view = run(live, {"analysis": "pv", "nodes": HOSPITALS, "params": pv_params})
    sim = simulate_dirs("pv", {n: live.data / n for n in HOSPITALS}, params=pv_params)
    assert view.result == sim
    assert "M01A→K92" in view.result["signals"]  # the built-in NSAID → GI-bleeding effect
