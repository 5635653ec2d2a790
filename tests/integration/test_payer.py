"""Payer analytics through the real hub and node processes, against the pooled computation."""

from __future__ import annotations

import pandas as pd
import pytest

from healthspace.core.errors import InvalidInput
from healthspace.payer.cases import grouped_cases
from healthspace.payer.rules import load_rules
from healthspace.sim import load_site

from .conftest import HOSPITALS

pytestmark = pytest.mark.xdist_group("federation")


def test_secure_casemix_across_hospitals_equals_the_pooled_groups(live):
    with live.consumer() as client:
        view = client.wait(client.submit({"analysis": "casemix", "nodes": HOSPITALS,
                                          "secure_aggregation": True}).id, timeout=180)
    assert view.status.value == "completed", view.error
    frames = []
    for name in HOSPITALS:
        site = load_site(live.data / name)
        try:
            frames.append(grouped_cases(site.con, load_rules()))
        finally:
            site.con.close()
    pooled = pd.concat(frames, ignore_index=True)
    result = view.result
    assert result["cases"] == len(pooled) and result["rules"]["official"] is False
    counts = pooled["drg"].value_counts()
    for group in result["groups"]:
        n = int(counts[group["drg"]])
        assert group["cases"] == (n if n >= 10 else None)
        if group["cases"]:
            mean = pooled.loc[pooled["drg"] == group["drg"], "cost"].mean()
            assert group["mean_charge"] == pytest.approx(mean, rel=1e-9)


def test_drg_weights_through_the_hub_equal_the_simulation(live):
    from healthspace.sim import simulate_dirs

    with live.consumer() as client:
        view = client.wait(client.submit({"analysis": "drg_weights", "nodes": HOSPITALS,
                                          "secure_aggregation": True}).id, timeout=180)
    assert view.status.value == "completed", view.error
    sim = simulate_dirs("drg_weights", {n: live.data / n for n in HOSPITALS})
    assert [g["drg"] for g in view.result["groups"]] == [g["drg"] for g in sim["groups"]]
    for ours, ref in zip(view.result["groups"], sim["groups"], strict=True):
        assert ours.get("trimmed_cases") == ref.get("trimmed_cases")
        if ours.get("mean_charge") is not None:
            assert ours["mean_charge"] == pytest.approx(ref["mean_charge"], rel=1e-9)
            assert ours["relative_weight"] == pytest.approx(ref["relative_weight"], rel=1e-9)


def test_fraud_screening_runs_on_the_payer_node_only(live):
    from healthspace.analyses.execute import run_alone

    with live.consumer() as client:
        view = client.wait(client.submit({"analysis": "fraud_screen", "nodes": ["payer"],
                                          "purpose": "payer_policy"}).id, timeout=120)
        assert view.status.value == "completed", view.error
        with pytest.raises(InvalidInput) as refused:
            client.submit({"analysis": "fraud_screen", "nodes": ["payer", "hospital_1"]})
    site = load_site(live.data / "payer")
    try:
        reference = run_alone(site.con, site="payer", analysis="fraud_screen", params={})
    finally:
        site.con.close()
    assert view.result["hospitals"] == reference["hospitals"]
    assert [r["hospital"] for r in view.result["upcoding"]] == \
        [r["hospital"] for r in reference["upcoding"]]
    assert refused.value.field == "nodes"
