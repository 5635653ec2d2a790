"""Real-world-evidence statistics through the real hub and node processes, against reference
implementations (statsmodels, lifelines, scipy) on the pooled data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi

from .conftest import ROSSI_NODES
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


def test_cox_on_registry_nodes_equals_lifelines(live):
    view = run(live, {"analysis": "cox", "nodes": ROSSI_NODES,
                      "params": {"duration": "week", "event": "arrest",
                                 "covariates": ["fin", "age", "prio"]}})
    df = load_rossi()
    cph = CoxPHFitter().fit(df[["week", "arrest", "fin", "age", "prio"]], "week", "arrest",
                            fit_options={"precision": 1e-12})
    assert_close(view.result["params"], cph.params_)
    assert_close(view.result["bse"], cph.standard_errors_)
    assert view.result["nobs"] == len(df)
    assert view.round >= 3  # means, then Newton rounds: every round went through the nodes


def test_glm_on_registry_nodes_equals_statsmodels(live):
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    formula = "arrest ~ fin + age + C(race) + prio"
    view = run(live, {"analysis": "glm", "nodes": ROSSI_NODES,
                      "params": {"formula": formula, "family": "binomial"}})
    fit = smf.glm(formula, load_rossi(), family=sm.families.Binomial()).fit(tol=1e-12)
    assert_close(view.result["params"], fit.params)
    assert_close(view.result["bse"], fit.bse)


def test_km_by_group_through_the_cli_equals_lifelines(live, tmp_path):
    study = tmp_path / "km.json"
    study.write_text(json.dumps({"analysis": "km", "nodes": ROSSI_NODES,
                                 "params": {"duration": "week", "event": "arrest",
                                            "group": "fin"}}))
    submitted = json.loads(cli(live, "study", "submit", str(study), "--wait", "--json").stdout)
    result = json.loads(cli(live, "study", "results", str(submitted["id"]), "--json").stdout)
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
