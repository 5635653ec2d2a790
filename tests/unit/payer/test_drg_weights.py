"""Federated DRG weights against the pooled computation on the same synthetic hospitals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from healthspace.sim import simulate_dirs

from .conftest import SITES


def order_statistic(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[max(math.ceil(q * len(ordered)), 1) - 1])


@pytest.fixture(scope="module")
def weights(synth_dir):
    return {secure: simulate_dirs("drg_weights", {n: synth_dir / n for n in SITES},
                                  secure=secure) for secure in (False, True)}


def test_iqr_weights_equal_the_pooled_computation(weights, pooled):
    result = weights[True]
    tol = result["tolerance"]["quantile_charge_relative"]
    kept_all = []
    for g in result["groups"]:
        cases = pooled[pooled["drg"] == g["drg"]]
        if g.get("suppressed"):
            assert len(cases) < 10 or g["cases"] is None
            continue
        assert g["cases"] == len(cases)
        cost = cases["cost"].to_numpy()
        median = order_statistic(cost, 0.5)
        assert abs(g["median_charge"] / median - 1) <= tol
        assert g["median_los"] == order_statistic(cases["los"].to_numpy(), 0.5)
        # the IQR bounds follow from the histogram quartiles, within the same tolerance
        q1, q3 = order_statistic(cost, 0.25), order_statistic(cost, 0.75)
        lo, hi = g["trim_bounds"]
        assert lo == pytest.approx(q1 - 1.5 * (q3 - q1), abs=4 * tol * q3)
        assert hi == pytest.approx(q3 + 1.5 * (q3 - q1), abs=4 * tol * q3)
        kept = cases[(cases["cost"] >= lo) & (cases["cost"] <= hi)]
        assert g["trimmed_cases"] == len(kept)
        assert g["mean_charge"] == pytest.approx(kept["cost"].mean(), rel=1e-9)
        assert g["cv_charge"] == pytest.approx(kept["cost"].std() / kept["cost"].mean(),
                                               rel=1e-7)
        assert g["mean_los"] == pytest.approx(kept["los"].mean(), rel=1e-9)
        assert g["untrimmed_mean_charge"] == pytest.approx(cost.mean(), rel=1e-9)
        kept_all.append(kept.assign(drg=g["drg"]))
    assert result["rules"]["official"] is False


def test_untrimmed_relative_weights_are_group_over_overall_mean(synth_dir, pooled):
    result = simulate_dirs("drg_weights", {n: synth_dir / n for n in SITES},
                           params={"trim": "none"}, secure=True)
    overall = pooled["cost"].mean()
    assert result["overall_mean_charge"] == pytest.approx(overall, rel=1e-9)
    shown = [g for g in result["groups"] if not g.get("suppressed")]
    assert len(shown) >= 10
    for g in shown:
        cost = pooled.loc[pooled["drg"] == g["drg"], "cost"]
        assert g["trimmed_cases"] == g["cases"] == len(cost)
        assert g["relative_weight"] == pytest.approx(cost.mean() / overall, rel=1e-9)


def test_secure_and_clear_weights_agree(weights):
    clear, secure = weights[False], weights[True]
    assert [g["drg"] for g in clear["groups"]] == [g["drg"] for g in secure["groups"]]
    for a, b in zip(clear["groups"], secure["groups"], strict=True):
        for key in ("cases", "trimmed_cases", "median_los"):
            assert a.get(key) == b.get(key)
        for key in ("mean_charge", "median_charge", "relative_weight"):
            if a.get(key) is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-9)


def test_three_sd_trimming_is_exact(synth_dir, pooled):
    result = simulate_dirs("drg_weights", {n: synth_dir / n for n in SITES},
                           params={"trim": "3sd"}, secure=True)
    for g in result["groups"]:
        if g.get("suppressed"):
            continue
        cost = pooled.loc[pooled["drg"] == g["drg"], "cost"]
        lo, hi = cost.mean() - 3 * cost.std(), cost.mean() + 3 * cost.std()
        assert g["trim_bounds"] == pytest.approx([lo, hi], rel=1e-9)
        kept = cost[(cost >= lo) & (cost <= hi)]
        assert g["trimmed_cases"] == len(kept)
        assert g["mean_charge"] == pytest.approx(kept.mean(), rel=1e-9)


def test_each_hospital_is_placed_against_the_network(weights, pooled):
    """CMI, cost and LOS indices per hospital from the pooled cases and the released
    weights; delivered apart from the shared result."""
    for secure in (False, True):
        result = weights[secure]
        released = {g["drg"]: g for g in result["groups"] if not g.get("suppressed")}
        assert set(result["delivered"]) == set(SITES)
        shared = json.dumps({k: v for k, v in result.items() if k != "delivered"})
        assert '"cmi"' not in shared and '"cost_index"' not in shared
        for site in SITES:
            cases = pooled[(pooled["site"] == site) & pooled["drg"].isin(released)]
            weight = cases["drg"].map(lambda d: released[d]["relative_weight"])
            mean_charge = cases["drg"].map(lambda d: released[d]["mean_charge"])
            mean_los = cases["drg"].map(lambda d: released[d]["mean_los"])
            position = result["delivered"][site]
            assert position["weighted_cases"] == len(cases)
            assert position["cases"] == int((pooled["site"] == site).sum())
            assert position["cmi"] == pytest.approx(weight.mean(), rel=1e-9)
            assert position["cost_index"] == pytest.approx(
                cases["cost"].sum() / mean_charge.sum(), rel=1e-9)
            assert position["los_index"] == pytest.approx(
                cases["los"].sum() / mean_los.sum(), rel=1e-9)
    # the tertiary hospital (hospital_1) treats heavier cases at a higher cost
    delivered = weights[True]["delivered"]
    assert delivered["hospital_1"]["cost_index"] > delivered["hospital_2"]["cost_index"]
