"""cox: exact pooled Cox fits against lifelines and statsmodels, concordance, refusals, CLI."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from securekit import check_sites
from statsmodels.duration.hazard_regression import PHReg

from healthspace.analyses.base import LocalContext
from healthspace.analyses.cox import Cox
from healthspace.cli.main import run
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.sim import simulate_tables

TOL = 1e-8
ROSSI = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
TIGHT = {"precision": 1e-14, "r_precision": 1e-16, "max_steps": 500}
SECURE = pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])


def write_sites(tmp_path, parts):
    paths = {}
    for name, part in zip("ABC", parts, strict=False):
        paths[name] = tmp_path / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


def vec(result, key, names):
    return np.array([result[key][c] for c in names])


def lifelines_fit(df, duration, event, covariates, **kw):
    return CoxPHFitter().fit(df[[duration, event, *covariates, *kw.get("strata", [])]],
                             duration, event, fit_options=TIGHT, **kw)


def statsmodels_fit(df, duration, event, covariates, ties):
    model = PHReg(df[duration].to_numpy(float), df[covariates].to_numpy(float),
                  status=df[event].to_numpy(), ties=ties)
    return model.fit(method="newton", tol=1e-14, maxiter=200)


def assert_lifelines(result, ref, covariates):
    assert np.max(np.abs(vec(result, "params", covariates) - ref.params_[covariates])) <= TOL
    assert np.max(np.abs(vec(result, "bse", covariates)
                         - ref.standard_errors_[covariates])) <= TOL
    assert abs(result["log_likelihood"] - ref.log_likelihood_) <= TOL


def assert_statsmodels(result, ref, covariates):
    assert np.max(np.abs(vec(result, "params", covariates) - ref.params)) <= TOL
    assert np.max(np.abs(vec(result, "bse", covariates) - ref.bse)) <= TOL
    assert abs(result["log_likelihood"] - ref.llf) <= TOL


def cox(paths, duration="week", event="arrest", covariates=ROSSI, secure=False, **params):
    result = simulate_tables("cox", paths, params={"duration": duration, "event": event,
                                                   "covariates": covariates, **params},
                             secure=secure)
    assert result.get("secure_aggregation", False) is secure
    return result


@pytest.fixture
def rossi(tmp_path):
    df = load_rossi()
    df["site"] = ["A"] * 150 + ["B"] * 150 + ["C"] * 132
    parts = [df.iloc[:150], df.iloc[150:300], df.iloc[300:]]
    return write_sites(tmp_path, parts), df


@SECURE
def test_rossi_efron_equals_lifelines(rossi, secure):
    paths, df = rossi
    result = cox(paths, secure=secure)
    ref = lifelines_fit(df, "week", "arrest", ROSSI)
    assert_lifelines(result, ref, ROSSI)
    assert abs(result["log_likelihood_null"] - ref._ll_null_) <= TOL
    lr = ref.log_likelihood_ratio_test()
    assert abs(result["lr_test"]["statistic"] - lr.test_statistic) <= 1e-7
    assert result["lr_test"]["df"] == lr.degrees_freedom
    assert abs(result["lr_test"]["p"] - lr.p_value) <= TOL
    summary = ref.summary
    for column, key in (("exp(coef)", "hazard_ratios"), ("z", "zvalues"), ("p", "pvalues")):
        assert np.max(np.abs(vec(result, key, ROSSI) - summary[column][ROSSI])) <= 1e-7
    ci = np.array([result["conf_int"][c] for c in ROSSI])
    assert np.max(np.abs(ci - summary[["coef lower 95%", "coef upper 95%"]].loc[ROSSI])) <= TOL
    assert result["nobs"] == 432 and result["n_events"] == 114
    check_sites(result, "sites", {"A": 150, "B": 150, "C": 132}, secure)
    check_sites(result, "coarsened", {"A": 0, "B": 0, "C": 0}, secure)  # week 52: many
    assert result["ties"] == "efron" and result["strata_by_site"] is False
    assert result["converged"] and 3 <= result["iterations"] <= 10


@SECURE
def test_rossi_breslow_and_efron_equal_statsmodels(rossi, secure):
    paths, df = rossi
    for ties in ("breslow", "efron"):
        result = cox(paths, ties=ties, secure=secure)
        assert result["ties"] == ties
        assert_statsmodels(result, statsmodels_fit(df, "week", "arrest", ROSSI, ties), ROSSI)


@SECURE
def test_rossi_concordance_within_its_bound(rossi, secure):
    paths, df = rossi
    result = cox(paths, secure=secure)
    reference = lifelines_fit(df, "week", "arrest", ROSSI).concordance_index_
    bound = result["concordance_error_bound"]
    assert 0 < bound < 0.02  # cross-site pairs whose scores share a bin, halved
    assert abs(result["concordance"] - reference) <= bound


@SECURE
def test_strata_by_site_equals_lifelines_strata(rossi, secure):
    paths, df = rossi
    result = cox(paths, strata_by_site=True, secure=secure)
    ref = lifelines_fit(df, "week", "arrest", ROSSI, strata=["site"])
    assert_lifelines(result, ref, ROSSI)
    # lifelines' stratified C compares pairs within strata only, which nodes count exactly
    assert result["concordance_error_bound"] == 0
    assert abs(result["concordance"] - ref.concordance_index_) <= 1e-12
    assert result["strata_by_site"] is True


def make_ties(seed=5, n=600):
    """Integer times 1…20 (follow-up ends at 20), so most event times carry several events."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.integers(0, 2, n)
    latent = rng.exponential(1 / (0.08 * np.exp(0.6 * x1 - 0.5 * x2)))
    t = np.minimum(np.ceil(latent), 20).astype(int)
    e = ((latent <= 20) & (rng.uniform(size=n) < 0.8)).astype(int)
    return pd.DataFrame({"t": t, "e": e, "x1": x1, "x2": x2})


@SECURE
def test_heavy_ties_both_methods(tmp_path, secure):
    df = make_ties()
    parts = [df.iloc[:200], df.iloc[200:350], df.iloc[350:]]
    paths = write_sites(tmp_path, parts)
    assert df[df.e == 1].groupby("t").size().max() >= 10
    efron = cox(paths, "t", "e", ["x1", "x2"], secure=secure)
    check_sites(efron, "coarsened", {"A": 0, "B": 0, "C": 0}, secure)
    assert_lifelines(efron, lifelines_fit(df, "t", "e", ["x1", "x2"]), ["x1", "x2"])
    assert_statsmodels(efron, statsmodels_fit(df, "t", "e", ["x1", "x2"], "efron"),
                       ["x1", "x2"])
    breslow = cox(paths, "t", "e", ["x1", "x2"], ties="breslow", secure=secure)
    assert_statsmodels(breslow, statsmodels_fit(df, "t", "e", ["x1", "x2"], "breslow"),
                       ["x1", "x2"])
    assert abs(breslow["params"]["x1"] - efron["params"]["x1"]) > 1e-3  # ties do matter
    ref_c = lifelines_fit(df, "t", "e", ["x1", "x2"]).concordance_index_
    assert abs(efron["concordance"] - ref_c) <= efron["concordance_error_bound"]


def coarsened_sites(tmp_path):
    """Site B's follow-up ends in a tail of single times: nine rows move onto t* = 26."""
    df = make_ties(seed=8, n=400)
    a, b = df.iloc[:250].copy(), df.iloc[250:].copy()
    b.loc[b.index[-15:], "t"] = np.arange(21, 36)  # 15 late, distinct times
    return write_sites(tmp_path, [a, b]), a, b


@SECURE
def test_coarsened_site_equals_the_fit_on_coarsened_rows(tmp_path, secure):
    paths, a, b = coarsened_sites(tmp_path)
    result = cox(paths, "t", "e", ["x1", "x2"], secure=secure)
    cutoff = b.t.sort_values(ascending=False).iloc[9]  # #{T ≥ t*} = 10 at B
    assert cutoff == 26 and int((b.t > cutoff).sum()) == 9
    check_sites(result, "coarsened", {"A": 0, "B": 9}, secure)
    coarse = pd.concat([a, b.assign(t=b.t.clip(upper=cutoff))])
    assert_lifelines(result, lifelines_fit(coarse, "t", "e", ["x1", "x2"]), ["x1", "x2"])
    raw = lifelines_fit(pd.concat([a, b]), "t", "e", ["x1", "x2"])
    assert abs(result["params"]["x1"] - raw.params_["x1"]) > TOL  # the moved rows count


@pytest.mark.parametrize("strata_by_site", [False, True], ids=["pooled", "stratified"])
def test_secure_withholds_site_values_and_equals_plain(tmp_path, strata_by_site):
    """The same fit and exactly the same concordance (across-site pairs included); per-site
    counts are withheld, their totals released."""
    paths, a, b = coarsened_sites(tmp_path)
    plain = cox(paths, "t", "e", ["x1", "x2"], strata_by_site=strata_by_site)
    secure = cox(paths, "t", "e", ["x1", "x2"], strata_by_site=strata_by_site, secure=True)
    assert secure["sites"] == secure["coarsened"] == {"A": None, "B": None}
    assert secure["nobs"] == sum(plain["sites"].values()) == 400
    assert secure["n_events"] == plain["n_events"] == int(a.e.sum() + b.e.sum())
    assert secure["coarsened_total"] == sum(plain["coarsened"].values()) == 9
    for key in ("params", "bse"):
        assert np.max(np.abs(vec(secure, key, ["x1", "x2"])
                             - vec(plain, key, ["x1", "x2"]))) <= 1e-12
    assert abs(secure["log_likelihood"] - plain["log_likelihood"]) <= 1e-10
    assert secure["iterations"] == plain["iterations"]
    assert secure["concordance"] == plain["concordance"]
    assert secure["concordance_error_bound"] == plain["concordance_error_bound"]
    assert (secure["concordance_error_bound"] > 0) is not strata_by_site


def test_secure_node_partials(tmp_path):
    """Round 1: only the event times in clear; later rounds align on the hub's grid, which
    must hold every event time of the node."""
    df = make_ties()
    path = write_sites(tmp_path, [df])["A"]
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_data AS SELECT * FROM read_csv_auto(?)", [str(path)])
    impl = Cox()
    params = impl.parse_params({"duration": "t", "event": "e", "covariates": ["x1", "x2"]})
    ctx = LocalContext(con=con, site="A")
    first = impl.local_secure(ctx, params, None)
    event_times = decode_array(first.public["event_times"])
    assert set(first.public) == {"event_times"}
    assert event_times.tolist() == sorted(set(df.t[df.e == 1]))
    assert set(first.sums) == {"n", "n_events", "coarsened", "sum_x", "sum_xx"}
    assert first.integer == {"n", "n_events", "coarsened"}
    grid = np.union1d(event_times, [0.5, 25.0])
    ask = {"mean": encode_array(np.zeros(2)), "beta": encode_array(np.array([0.3, -0.2])),
           "grid": encode_array(grid)}
    newton = impl.local_secure(ctx, params, ask)
    assert newton.public == {} and newton.integer == {"d"}
    assert {k: v.shape for k, v in newton.sums.items()} == {
        "s0": (len(grid),), "s1": (len(grid), 2), "s2": (len(grid), 2, 2), "xsum": (2,),
        "d": (len(grid),), "d0": (len(grid),), "d1": (len(grid), 2), "d2": (len(grid), 2, 2)}
    assert newton.sums["d"].sum() == df.e.sum() and newton.sums["s0"][-1] == 0
    counts = impl.local_secure(ctx, params, {**ask, "edges": [-0.5, 0.0, 0.5]})
    assert counts.integer == set(counts.sums) == {"within", "events", "partners", "own"}
    assert counts.sums["events"].shape == (len(grid), 4)
    with pytest.raises(InvalidInput) as info:
        impl.local_secure(ctx, params, {**ask, "grid": encode_array(event_times[1:])})
    assert info.value.field == "round_input"


def test_true_coefficients_lie_in_the_intervals(tmp_path):
    rng = np.random.default_rng(11)
    true = {"x1": 0.5, "x2": -0.3, "x3": 0.8}
    parts = []
    for _ in range(3):
        n = 3000
        x = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.uniform(0, 2, n),
                          "x3": rng.integers(0, 2, n) == 1})
        hazard = 0.1 * np.exp(x.astype(float) @ pd.Series(true))
        latent = rng.exponential(1 / hazard)
        censor = rng.exponential(15, n)
        parts.append(x.assign(T=np.minimum(latent, censor), E=(latent <= censor).astype(int)))
    paths = write_sites(tmp_path, parts)
    result = cox(paths, "T", "E", list(true))
    for name, beta in true.items():
        lo, hi = result["conf_int"][name]
        assert lo <= beta <= hi, (name, lo, hi)
    assert result["coarsened"] == {"A": 9, "B": 9, "C": 9}  # k − 1 distinct late times each
    assert result["lr_test"]["p"] < 1e-10


def test_refusals(tmp_path):
    df = make_ties()
    paths = write_sites(tmp_path, [df.iloc[:200], df.iloc[200:208]])
    with pytest.raises(Refused, match="site B refused.*only 8 usable rows"):
        cox(paths, "t", "e", ["x1"])
    few = df.iloc[200:260].assign(e=[1] * 6 + [0] * 54)
    paths = write_sites(tmp_path, [df.iloc[:200], few])
    with pytest.raises(Refused, match="site B refused.*only 6 events"):
        cox(paths, "t", "e", ["x1"])
    wide = df.iloc[200:212].assign(x3=1.0, x4=2.0)
    paths = write_sites(tmp_path, [df.iloc[:200].assign(x3=1.0, x4=2.0), wide])
    with pytest.raises(Refused, match="site B refused.*near-saturated"):
        cox(paths, "t", "e", ["x1", "x2", "x3", "x4"])


@pytest.mark.parametrize(("change", "params", "field"), [
    ({}, {"duration": "nosuch"}, "duration"),
    ({}, {"event": "nosuch"}, "event"),
    ({}, {"covariates": ["x1", "nosuch"]}, "covariates"),
    ({}, {"covariates": []}, "covariates"),
    ({}, {"covariates": ["x1", "x1"]}, "covariates"),
    ({}, {"covariates": ["x1", "t"]}, "covariates"),
    ({}, {"ties": "exact"}, "ties"),
    ({"x2": "text"}, {}, "covariates"),
    ({"t": -1}, {}, "duration"),
    ({"e": 2}, {}, "event"),
    ({"x3": 1.0}, {"covariates": ["x1", "x3"]}, "covariates"),  # constant: singular
    ({}, {"max_iter": 1}, "max_iter"),  # stops before converging
])
def test_bad_input_names_the_field(tmp_path, change, params, field):
    df = make_ties().assign(**change)
    paths = write_sites(tmp_path, [df.iloc[:300], df.iloc[300:]])
    with pytest.raises(InvalidInput) as info:
        simulate_tables("cox", paths, params={"duration": "t", "event": "e",
                                              "covariates": ["x1", "x2"], **params})
    assert info.value.field == f"params.{field}"


def test_monotone_likelihood_is_reported_not_raised(tmp_path):
    df = make_ties()
    df["x3"] = df.e  # each event has the largest x3 of its risk set: the MLE is infinite
    paths = write_sites(tmp_path, [df.iloc[:300], df.iloc[300:]])
    with pytest.raises(InvalidInput, match="did not converge.*monotone") as info:
        cox(paths, "t", "e", ["x1", "x3"], max_iter=8)
    assert info.value.field == "params.max_iter"


def test_what_leaves_a_node(tmp_path):
    """Per time only risk-set tails, event counts and (Efron) tied sums; Σx only in total;
    every released time has at least k at risk; the node caps the concordance bins."""
    df = make_ties()
    df.loc[:14, "t"] = np.arange(21, 36)  # a tail the node must coarsen
    path = write_sites(tmp_path, [df])["A"]
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_data AS SELECT * FROM read_csv_auto(?)", [str(path)])
    impl = Cox()
    ask = {"mean": encode_array(np.zeros(2)), "beta": encode_array(np.array([0.3, -0.2]))}
    for ties, tied in (("efron", {"d0", "d1", "d2"}), ("breslow", set())):
        params = impl.parse_params({"duration": "t", "event": "e", "covariates": ["x1", "x2"],
                                    "ties": ties})
        partial = impl.local(LocalContext(con=con, site="A"), params, ask)
        assert set(partial) == {"n", "n_events", "coarsened", "times", "s0", "s1", "s2",
                                "event_times", "d", "xsum"} | tied
        assert decode_array(partial["xsum"]).shape == (2,)
        times = decode_array(partial["times"])
        assert partial["coarsened"] == 9 and times.max() == 26
        coarse = np.minimum(df.t.to_numpy(), 26)
        assert min(int(np.sum(coarse >= u)) for u in times) >= 10
    ctx = LocalContext(con=con, site="A")
    assert impl.local(ctx, params, {**ask, "edges": [-0.5, 0.0, 0.5]})["comparable"] > 0
    with pytest.raises(Refused, match="at most 64"):
        impl.local(ctx, params, {**ask, "edges": np.linspace(-1, 1, 500).tolist()})


def test_cli_json_contract(rossi, capsys):
    paths, df = rossi
    argv = ["sim", "cox", "--duration", "week", "--event", "arrest", "--covariates",
            ",".join(ROSSI), "--json"]
    for name, path in paths.items():
        argv += ["--table", f"{name}={path}"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"params", "bse", "hazard_ratios", "conf_int", "zvalues", "pvalues",
                        "log_likelihood", "log_likelihood_null", "lr_test", "concordance",
                        "concordance_error_bound", "nobs", "n_events", "iterations", "ties",
                        "strata_by_site", "sites", "coarsened"}
    assert_lifelines(doc, lifelines_fit(df, "week", "arrest", ROSSI), ROSSI)
    assert run([*argv, "--ties", "breslow", "--strata-by-site"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ties"] == "breslow" and doc["strata_by_site"] is True
    assert run([a for a in argv if a != "--json"]) == 0  # the table view
    text = capsys.readouterr().out
    assert "HR" in text and "concordance" in text and "prio" in text


@pytest.mark.parametrize(("extra", "field"), [
    (["--duration", "nosuch", "--event", "arrest", "--covariates", "fin"], "duration"),
    (["--duration", "week", "--event", "arrest", "--covariates", "fin,nosuch"], "covariates"),
    (["--duration", "week", "--event", "arrest", "--covariates", " , "], "covariates"),
    (["--duration", "week", "--event", "arrest", "--covariates", "fin", "--ties", "x"], "ties"),
])
def test_cli_bad_input_exits_2_naming_field(rossi, capsys, extra, field):
    paths, _ = rossi
    argv = ["sim", "cox", "--table", f"A={paths['A']}", *extra, "--json"]
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert field in captured.err
    assert "Traceback" not in captured.err
