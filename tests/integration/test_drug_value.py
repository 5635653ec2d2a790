"""Drug value through the real hub and hospital nodes: the bundled study over HTTP equals the
in-process simulation and independent references on the pooled analysis tables (lifelines for
KM and Cox on the nodes' coarsened times, pandas for cost rates and the ICER); the CLI runs it
under secure aggregation and renders the report from the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter

import healthspace
from healthspace.analyses.base import LocalContext
from healthspace.client.studyfile import load_study_file
from healthspace.cohort.dataset import build_analysis_table, load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.governance.policy import UsagePolicy
from healthspace.sim import load_site, simulate

from .conftest import HOSPITALS, OPEN_POLICY
from .helpers import cli

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("federation")]
STUDY = Path(healthspace.__file__).parent / "examples" / "drug_value_study.yaml"
K = 10


def submit(live, body):
    with live.consumer() as client:
        view = client.wait(client.submit(body).id, timeout=300)
    assert view.status.value == "completed", (view.status, view.error,
                                              [(t.node, t.error) for t in view.tasks])
    return view


def coarsen(frame: pd.DataFrame, k: int = K) -> pd.DataFrame:
    """The nodes' survival disclosure rule, written independently: times above the k-th
    largest move onto it."""
    cutoff = frame["time"].sort_values(ascending=False).iloc[k - 1]
    return frame.assign(time=frame["time"].clip(upper=cutoff))


def close(ours, ref, rel=1e-9, path="result"):
    """Equal structure; numbers equal within ``rel`` (summation order differs by transport)."""
    if isinstance(ref, dict):
        assert set(ours) == set(ref), path
        for key in ref:
            close(ours[key], ref[key], rel, f"{path}.{key}")
    elif isinstance(ref, list):
        assert len(ours) == len(ref), path
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            close(a, b, rel, f"{path}[{i}]")
    elif isinstance(ref, float):
        assert ours == pytest.approx(ref, rel=rel, abs=1e-12), path
    else:
        assert ours == ref, path


@pytest.fixture(scope="module")
def study(live):
    """The bundled study, its in-process simulation and each hospital's analysis table."""
    spec = load_study_file(STUDY)
    tables, sites = {}, {}
    for name in HOSPITALS:
        sites[name] = load_site(live.data / name)
        sites[name].policy = UsagePolicy.model_validate(OPEN_POLICY)
        ctx = LocalContext(con=sites[name].con, site=name, cohort=load_cohort(spec.cohort))
        build_analysis_table(ctx, load_dataset(spec.dataset))
        tables[name] = sites[name].con.execute("SELECT * FROM analysis_data").df()
        sites[name].con.execute("DROP TABLE analysis_data")
    try:
        sim = simulate("drug_value", sites, params=spec.params, cohort=spec.cohort,
                       dataset=spec.dataset, purpose=spec.purpose)
    finally:
        for site in sites.values():
            site.con.close()
    used = ["drug", "time", "event", "cost", *spec.params["covariates"]]
    tables = {name: t[used].dropna().reset_index(drop=True) for name, t in tables.items()}
    return spec, sim, tables


def test_drug_value_over_http_equals_simulation_and_pooled_references(live, study):
    spec, sim, tables = study
    view = submit(live, spec.model_dump(mode="json") | {"nodes": HOSPITALS})
    result = view.result
    close(result, sim)
    assert view.round >= 4  # KM and the arms' sums, Cox Newton rounds, concordance
    pooled = pd.concat(tables.values(), ignore_index=True)
    assert result["nobs"] == len(pooled) and result["sites"] == {n: len(t) for n, t in
                                                                 tables.items()}
    # cost per patient-year and the ICER, from the raw (uncoarsened) follow-up
    rate = {}
    for value, part in pooled.groupby("drug"):
        years = part["time"].sum() / 365.25
        rate[value] = (part["cost"].sum() / years, part["event"].sum() / years)
        arm = result["arms"][value]
        assert arm["persons"] == len(part) and arm["events"] == int(part["event"].sum())
        assert arm["cost_per_py"]["estimate"] == pytest.approx(rate[value][0], rel=1e-12)
    d_cost = rate["gliclazide"][0] - rate["metformin"][0]
    avoided = rate["metformin"][1] - rate["gliclazide"][1]
    comparison = result["comparison"]
    assert comparison["delta_cost_per_py"]["estimate"] == pytest.approx(d_cost, rel=1e-12)
    assert comparison["icer"]["ratio"] == pytest.approx(d_cost / avoided, rel=1e-12)
    # Kaplan–Meier per arm on the rows as each node coarsened them (per arm, per node)
    for value in ("gliclazide", "metformin"):
        part = pd.concat([coarsen(t[t["drug"] == value]) for t in tables.values()])
        kmf = KaplanMeierFitter().fit(part["time"], part["event"])
        curve = result["km"]["groups"][value]
        assert curve["timeline"] == list(kmf.survival_function_.index)
        assert np.max(np.abs(np.array(curve["survival"], dtype=float)
                             - kmf.survival_function_.iloc[:, 0].to_numpy())) <= 1e-10
    # the adjusted Cox hazard ratio on the rows as each node coarsened them (per node)
    covariates = spec.params["covariates"]
    frame = pd.concat([coarsen(t) for t in tables.values()], ignore_index=True)
    frame = frame.assign(treated=(frame["drug"] == "gliclazide").astype(int))
    cph = CoxPHFitter().fit(frame[["time", "event", "treated", *covariates]], "time", "event",
                            fit_options={"precision": 1e-12})
    assert result["cox"]["log_hr"] == pytest.approx(cph.params_["treated"], abs=1e-8)
    assert result["cox"]["se"] == pytest.approx(cph.standard_errors_["treated"], abs=1e-8)
    lo, hi = result["cox"]["ci"]
    assert lo < 1.5 < hi  # the synthetic hospitals' built-in gliclazide effect on heart failure
    assert math.isclose(result["cox"]["hazard_ratio"], math.exp(result["cox"]["log_hr"]))


@pytest.mark.slow
def test_secure_drug_value_through_the_cli_and_its_report(live, study, tmp_path):
    spec, sim, _ = study
    body = tmp_path / "study.json"
    body.write_text(json.dumps(spec.model_dump(mode="json") | {"nodes": HOSPITALS}))
    result = json.loads(cli(live, "study", "submit", str(body), "--secure", "--wait",
                            "--json").stdout)
    assert result["status"] == "completed" and result["secure_aggregation"] is True
    assert result["sites"] == dict.fromkeys(HOSPITALS)
    close(result["comparison"], sim["comparison"])
    close(result["arms"], sim["arms"])
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(result))
    cli(live, "payer", "value-report", "--result", str(saved), "--out", str(tmp_path / "rep"))
    text = (tmp_path / "rep" / "drug_value_report.md").read_text()
    assert f"(study {result['study_id']})" in text and "secure aggregation" in text
    for png in ("km_by_arm.png", "cost_per_patient_year.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
