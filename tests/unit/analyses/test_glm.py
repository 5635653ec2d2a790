"""glm: exact pooled fit against statsmodels, node refusals and the CLI contract."""

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from healthspace.cli.main import run
from healthspace.core.errors import Refused
from healthspace.sim import simulate_tables

TOL = 1e-8
FAMILIES = {"gaussian": sm.families.Gaussian(), "binomial": sm.families.Binomial(),
            "poisson": sm.families.Poisson()}


def make_data(seed: int = 7, n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n),
                       "group": rng.choice(["a", "b", "c"], n),
                       "logt": np.log(rng.uniform(0.5, 2.0, n)), "w": rng.uniform(0.5, 3.0, n)})
    eta = 0.3 + 0.5 * df.x1 - 0.4 * df.x2 + 0.3 * (df.group == "b")
    df["yg"] = eta + rng.normal(size=n)
    df["yb"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    df["yp"] = rng.poisson(np.exp(eta + df.logt))
    return df


def write_sites(tmp_path, parts):
    paths = {}
    for name, part in zip("ABC", parts, strict=False):
        paths[name] = tmp_path / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


@pytest.fixture
def sites(tmp_path):
    df = make_data()
    parts = [df.iloc[:300], df.iloc[300:600], df.iloc[600:]]
    parts[2] = parts[2][parts[2].group != "c"]  # site C lacks level c
    return write_sites(tmp_path, parts), pd.concat(parts)


def reference(pooled, formula, family, offset=None, weights=None):
    kw = {}
    if offset:
        kw["offset"] = pooled[offset]
    if weights:
        kw["var_weights"] = pooled[weights]
    return smf.glm(formula, pooled, family=FAMILIES[family], **kw).fit(tol=1e-14, maxiter=200)


@pytest.mark.parametrize(("formula", "family", "offset", "weights"), [
    ("yg ~ x1 + x2", "gaussian", None, None),
    ("yb ~ x1 + x2", "binomial", None, None),
    ("yp ~ x1 + x2", "poisson", "logt", None),
    ("yg ~ x1 * x2", "gaussian", None, "w"),
    ("yb ~ x1 + x2", "binomial", None, "w"),
    ("yg ~ x1 + C(group)", "gaussian", None, None),
    ("yb ~ x2 + C(group)", "binomial", None, None),
    ("yp ~ group + x1", "poisson", "logt", "w"),
])
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_matches_statsmodels_on_pooled_data(sites, formula, family, offset, weights, secure):
    paths, pooled = sites
    params = {"formula": formula, "family": family, "offset": offset, "weights": weights}
    result = simulate_tables("glm", paths, params=params, secure=secure)
    assert result.get("secure_aggregation", False) is secure
    ref = reference(pooled, formula, family, offset, weights)
    assert list(result["params"]) == list(ref.params.index)
    for key, expected in (("params", ref.params), ("bse", ref.bse)):
        got = pd.Series(result[key])
        assert np.max(np.abs(got - expected)) <= TOL, key
    assert np.max(np.abs(pd.Series(result["pvalues"]) - ref.pvalues)) <= TOL
    assert result["deviance"] == pytest.approx(ref.deviance, rel=1e-10)
    assert result["llf"] == pytest.approx(ref.llf, rel=1e-10)
    assert result["aic"] == pytest.approx(ref.aic, rel=1e-10)
    assert result["df_resid"] == ref.df_resid
    assert result["nobs"] == len(pooled)
    lo, hi = ref.conf_int().loc["x1"] if "x1" in ref.params else ref.conf_int().iloc[0]
    first = "x1" if "x1" in ref.params else ref.params.index[0]
    assert result["conf_int"][first] == pytest.approx([lo, hi], abs=TOL)


def test_categorical_level_missing_at_a_site_is_encoded_everywhere(sites):
    paths, _ = sites
    result = simulate_tables("glm", paths, params={"formula": "yg ~ C(group)"})
    assert list(result["params"]) == ["Intercept", "C(group)[T.b]", "C(group)[T.c]"]


def test_small_site_refused(tmp_path):
    df = make_data()
    paths = write_sites(tmp_path, [df.iloc[:400], df.iloc[400:406]])
    with pytest.raises(Refused, match="site B refused.*6 usable rows.*minimum cell size 10"):
        simulate_tables("glm", paths, params={"formula": "yg ~ x1"})


def test_near_saturated_refused(tmp_path):
    df = make_data()
    paths = write_sites(tmp_path, [df.iloc[:400], df.iloc[400:412]])
    with pytest.raises(Refused, match="site B.*near-saturated"):
        simulate_tables("glm", paths, params={"formula": "yg ~ x1 + x2 + C(group)"})


def test_cli_json_contract(sites, capsys):
    paths, pooled = sites
    argv = ["sim", "glm", "--formula", "yb ~ x1 + x2", "--family", "binomial", "--json"]
    for name, path in paths.items():
        argv += ["--table", f"{name}={path}"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    ref = reference(pooled, "yb ~ x1 + x2", "binomial")
    assert set(doc) >= {"params", "bse", "zvalues", "pvalues", "conf_int", "deviance", "aic",
                        "llf", "df_resid", "nobs", "iterations", "family"}
    assert np.max(np.abs(pd.Series(doc["params"]) - ref.params)) <= TOL
    assert run([a for a in argv if a != "--json"]) == 0  # the table view
    assert "x1" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "field"), [
    (["--formula", "yg ~ x1 +"], "formula"),
    (["--formula", "yg ~ nosuch"], "formula"),
    (["--formula", "yg ~ x1", "--family", "gamma"], "family"),
    (["--formula", "yg ~ x1", "--offset", "nosuch"], "offset"),
])
def test_cli_bad_input_exits_2_naming_field(sites, capsys, extra, field):
    paths, _ = sites
    argv = ["sim", "glm", "--table", f"A={paths['A']}", *extra, "--json"]
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert field in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(("family", "compact"), [("gaussian", True), ("binomial", True),
                                                 ("poisson", False)])
def test_secure_rounds_after_the_first_irls_round_use_the_compact_ring(
        sites, monkeypatch, family, compact):
    from healthspace.analyses import registry
    from healthspace.analyses.base import NextRound

    glm = registry.get("glm")
    original = type(glm).combine_secure
    scales: dict[int, Any] = {}

    def spy(self, sums, publics, params, state, round):
        outcome = original(self, sums, publics, params, state, round)
        if isinstance(outcome, NextRound):
            scales[round] = outcome.round_input.get("secure_scales")
        return outcome

    monkeypatch.setattr(type(glm), "combine_secure", spy)
    paths, pooled = sites
    y = {"gaussian": "yg", "binomial": "yb", "poisson": "yp"}[family]
    result = simulate_tables("glm", paths, params={"formula": f"{y} ~ x1 + x2",
                                                   "family": family}, secure=True)
    ref = reference(pooled, f"{y} ~ x1 + x2", family)
    assert np.max(np.abs(pd.Series(result["params"]) - ref.params)) <= TOL
    later = [scales[r] for r in sorted(scales) if r >= 2]
    assert len(later) >= 2 and scales[1] is None
    if compact:  # every round after the first IRLS round carries the agreed X'WX scale
        assert all(s is not None and set(s) == {"xtwx"} for s in later)
    else:
        assert all(s is None for s in later)
