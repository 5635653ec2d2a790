"""km: exact pooled Kaplan–Meier and log-rank against lifelines, refusals and the CLI contract."""

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_rossi
from lifelines.statistics import logrank_test, multivariate_logrank_test
from securekit import check_sites

from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput, Refused
from healthspace.sim import simulate_tables

TOL = 1e-10
SECURE = pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])


def write_sites(tmp_path, parts):
    paths = {}
    for name, part in zip("ABC", parts, strict=False):
        paths[name] = tmp_path / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


def as_float(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def assert_matches(curve, durations, events):
    kmf = KaplanMeierFitter().fit(durations, events)
    assert curve["timeline"] == list(kmf.survival_function_.index)
    assert np.max(np.abs(as_float(curve["survival"])
                         - kmf.survival_function_.iloc[:, 0].to_numpy())) <= TOL
    ci = kmf.confidence_interval_.to_numpy()
    assert np.max(np.abs(as_float(curve["ci_lower"]) - ci[:, 0])) <= TOL
    assert np.max(np.abs(as_float(curve["ci_upper"]) - ci[:, 1])) <= TOL
    assert curve["at_risk"] == [int(a) for a in kmf.event_table["at_risk"]]
    median = kmf.median_survival_time_
    assert curve["median"] == (None if np.isinf(median) else pytest.approx(median, abs=TOL))


def km(paths, secure=False, **params):
    result = simulate_tables("km", paths, params=params, secure=secure)
    assert result.get("secure_aggregation", False) is secure
    return result


@pytest.fixture
def rossi(tmp_path):
    df = load_rossi()[["week", "arrest", "fin", "race"]]
    parts = [df.iloc[:150], df.iloc[150:300], df.iloc[300:]]
    return write_sites(tmp_path, parts), df


@SECURE
def test_rossi_pooled_equals_lifelines(rossi, secure):
    paths, df = rossi
    result = km(paths, secure, duration="week", event="arrest")
    assert_matches(result, df.week, df.arrest)
    check_sites(result, "sites", {"A": 150, "B": 150, "C": 132}, secure)
    # most rows are censored at week 52, so no site has a small last risk set: exact
    check_sites(result, "coarsened", {"A": 0, "B": 0, "C": 0}, secure)


@SECURE
def test_rossi_grouped_and_logrank_equal_lifelines(rossi, secure):
    paths, df = rossi
    result = km(paths, secure, duration="week", event="arrest", group="fin")
    assert set(result["groups"]) == {"0", "1"}
    for value in (0, 1):
        part = df[df.fin == value]
        assert_matches(result["groups"][str(value)], part.week, part.arrest)
    ref = logrank_test(df.week[df.fin == 0], df.week[df.fin == 1],
                       df.arrest[df.fin == 0], df.arrest[df.fin == 1])
    assert abs(result["logrank_p"] - ref.p_value) <= TOL
    assert abs(result["logrank_statistic"] - ref.test_statistic) <= TOL


def make_ties(seed: int = 3, n: int = 240) -> pd.DataFrame:
    """Integer times with many ties, events and censorings at the same times, three groups."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"t": rng.integers(0, 12, n), "e": rng.integers(0, 2, n),
                         "g": rng.choice(["a", "b", "c"], n)})


def coarsen(part: pd.DataFrame, k: int) -> pd.DataFrame:
    """The disclosure rule, written independently: times above the k-th largest move onto it."""
    cutoff = part.t.sort_values(ascending=False).iloc[k - 1]
    return part.assign(t=part.t.clip(upper=cutoff))


@SECURE
def test_ties_and_three_groups(tmp_path, secure):
    df = make_ties()
    parts = [df.iloc[:90], df.iloc[90:170], df.iloc[170:]]
    paths = write_sites(tmp_path, parts)
    result = km(paths, secure, duration="t", event="e")
    # the late risk sets are small here, so the nodes coarsen; the answer is exactly the
    # pooled answer on the coarsened rows
    pooled = pd.concat([coarsen(part, 10) for part in parts])
    assert_matches(result, pooled.t, pooled.e)
    moved = {name: int((part.t != coarsen(part, 10).t).sum())
             for name, part in zip("ABC", parts, strict=True)}
    assert sum(moved.values()) > 0
    check_sites(result, "coarsened", moved, secure)
    grouped = km(paths, secure, duration="t", event="e", group="g")
    # with a group, the rule applies to each group's rows at each site
    pooled = pd.concat([coarsen(q, 10) for part in parts for _, q in part.groupby("g")])
    check_sites(grouped, "coarsened", {
        name: sum(int((q.t != coarsen(q, 10).t).sum()) for _, q in part.groupby("g"))
        for name, part in zip("ABC", parts, strict=True)}, secure)
    for value in ("a", "b", "c"):
        part = pooled[pooled.g == value]
        assert_matches(grouped["groups"][value], part.t, part.e)
    ref = multivariate_logrank_test(pooled.t, pooled.g, pooled.e)
    assert abs(grouped["logrank_p"] - ref.p_value) <= TOL
    assert abs(grouped["logrank_statistic"] - ref.test_statistic) <= TOL


@SECURE
def test_coarsening_moves_late_rows_and_keeps_earlier_estimates(tmp_path, secure):
    """Site A has a long tail of single times; B's last time is shared by 11 persons."""
    a = pd.DataFrame({"t": np.arange(1, 61), "e": np.arange(60) % 2})
    b = pd.DataFrame({"t": [*range(1, 30), *[30] * 11], "e": [1] * 29 + [0] * 11})
    paths = write_sites(tmp_path, [a, b])
    result = km(paths, secure, duration="t", event="e")
    # #{T ≥ 51} = 10 at A, so t* = 51 and the nine rows at 52…60 move onto it (events kept)
    check_sites(result, "coarsened", {"A": 9, "B": 0}, secure)
    moved = a.t > 51
    assert a.t[moved].tolist() == list(range(52, 61))
    coarse = pd.concat([a.assign(t=a.t.clip(upper=51)), b])
    assert_matches(result, coarse.t, coarse.e)
    raw = KaplanMeierFitter().fit(pd.concat([a, b]).t, pd.concat([a, b]).e)
    timeline = np.array(result["timeline"])
    survival = as_float(result["survival"])
    before = timeline < 51
    assert np.max(np.abs(survival[before] - raw.survival_function_at_times(timeline[before])
                         .to_numpy())) <= TOL
    assert timeline.max() == 51 and result["at_risk"][-1] == 10
    assert survival[-1] != pytest.approx(float(raw.survival_function_at_times(51).iloc[0]))


def test_secure_withholds_site_values_and_equals_plain(tmp_path):
    """Secure aggregation releases the same curves and log-rank test; per-site counts are
    withheld, their totals released. A group missing at a site adds zeros there."""
    df = make_ties()
    parts = [df.iloc[:90], df.iloc[90:170], df.iloc[170:]]
    parts[0] = parts[0][parts[0].g != "c"]
    paths = write_sites(tmp_path, parts)
    for group in (None, "g"):
        plain = km(paths, duration="t", event="e", group=group)
        secure = km(paths, secure=True, duration="t", event="e", group=group)
        assert secure["sites"] == secure["coarsened"] == {"A": None, "B": None, "C": None}
        assert secure["nobs"] == sum(plain["sites"].values()) == sum(map(len, parts))
        assert secure["coarsened_total"] == sum(plain["coarsened"].values()) > 0
        site_keys = {"sites", "coarsened", "nobs", "coarsened_total", "secure_aggregation"}
        assert {k: v for k, v in secure.items() if k not in site_keys} == {
            k: v for k, v in plain.items() if k not in site_keys}


def test_small_site_and_small_group_refused(tmp_path):
    df = make_ties()
    paths = write_sites(tmp_path, [df.iloc[:200], df.iloc[200:206]])
    with pytest.raises(Refused, match="site B refused.*6 usable rows.*minimum cell size 10"):
        simulate_tables("km", paths, params={"duration": "t", "event": "e"})
    small = df.copy()
    small.loc[:5, "g"] = "rare"
    paths = write_sites(tmp_path, [small.iloc[:120], small.iloc[120:]])
    with pytest.raises(Refused, match="site A refused.*group rare has only 6 rows"):
        simulate_tables("km", paths, params={"duration": "t", "event": "e", "group": "g"})


@pytest.mark.parametrize(("column", "values", "field"), [
    ("t", ["x"] * 240, "duration"),
    ("t", [-1] * 240, "duration"),
    ("e", [2] * 240, "event"),
])
def test_bad_values_name_the_field(tmp_path, column, values, field):
    df = make_ties()
    df[column] = values
    paths = write_sites(tmp_path, [df])
    with pytest.raises(InvalidInput) as info:
        simulate_tables("km", paths, params={"duration": "t", "event": "e"})
    assert info.value.field == f"params.{field}"


def test_cli_json_contract(rossi, capsys):
    paths, df = rossi
    argv = ["sim", "km", "--duration", "week", "--event", "arrest", "--group", "fin", "--json"]
    for name, path in paths.items():
        argv += ["--table", f"{name}={path}"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"groups", "logrank_p", "logrank_statistic"}
    for curve in doc["groups"].values():
        assert set(curve) == {"timeline", "survival", "ci_lower", "ci_upper", "at_risk",
                              "median"}
    ref = multivariate_logrank_test(df.week, df.fin, df.arrest)
    assert abs(doc["logrank_p"] - ref.p_value) <= TOL
    ungrouped = [a for a in argv if a not in ("--group", "fin")]
    assert run(ungrouped) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"timeline", "survival", "ci_lower", "ci_upper", "at_risk", "median"}
    assert run([a for a in argv if a != "--json"]) == 0  # the table view
    text = capsys.readouterr().out
    assert "log-rank" in text and "S(t)" in text


@pytest.mark.parametrize(("extra", "field"), [
    (["--duration", "nosuch", "--event", "arrest"], "duration"),
    (["--duration", "week", "--event", "nosuch"], "event"),
    (["--duration", "week", "--event", "arrest", "--group", "nosuch"], "group"),
    (["--duration", "week", "--event", "fin", "--min-cell-size", "3"], "min_cell_size"),
])
def test_cli_bad_input_exits_2_naming_field(rossi, capsys, extra, field):
    paths, _ = rossi
    argv = ["sim", "km", "--table", f"A={paths['A']}", *extra, "--json"]
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert field in captured.err
    assert "Traceback" not in captured.err
