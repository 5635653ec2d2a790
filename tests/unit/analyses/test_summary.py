"""summary: pooled moments and counts against pandas, quantile bounds against numpy, the
disclosure rules (bands, merged bins, complementary suppression) and the CLI contract."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.bands import band_max, band_min, merge_bins, release_crosstab
from healthspace.sim import simulate_tables

REL = 1e-10
SIZES = (300, 500, 200)


def make_site(rng: np.random.Generator, n: int) -> pd.DataFrame:
    df = pd.DataFrame({
        "age": rng.normal(60, 12, n).round(1),
        "bmi": rng.lognormal(3.2, 0.2, n),
        "sex": rng.choice(["F", "M"], n),
        "smoker": rng.choice([True, False], n, p=[0.3, 0.7]),
        "grp": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
        "stage": rng.integers(1, 4, n),
    })
    df.loc[rng.choice(n, 7, replace=False), "bmi"] = np.nan
    df.loc[:2, "grp"] = "rare"  # three persons per site: below any minimum cell size
    return df


def write_sites(tmp_path, parts):
    paths = {}
    for name, part in zip("ABC", parts, strict=False):
        paths[name] = tmp_path / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


@pytest.fixture
def sites(tmp_path):
    rng = np.random.default_rng(11)
    parts = [make_site(rng, n) for n in SIZES]
    return write_sites(tmp_path, parts), pd.concat(parts, ignore_index=True)


def rel(a, b):
    return abs(a - b) / abs(b)


def check_numeric(stats, values: pd.Series, qs):
    values = values.dropna()
    assert stats["n"] == len(values)
    assert rel(stats["mean"], values.mean()) <= REL
    assert rel(stats["sd"], values.std()) <= REL
    lo, hi = stats["min_band"]
    assert lo <= values.min() < hi
    lo, hi = stats["max_band"]
    assert lo < values.max() <= hi
    assert [q["q"] for q in stats["quantiles"]] == qs
    for q in stats["quantiles"]:
        exact = float(np.quantile(values, q["q"]))
        assert q["lower"] <= exact <= q["upper"]
        assert abs(q["value"] - exact) <= q["error_bound"] == q["upper"] - q["lower"]


def test_numeric_and_counts_match_pandas(sites):
    paths, pooled = sites
    qs = [0.1, 0.25, 0.5, 0.75, 0.9]
    result = simulate_tables("summary", paths, params={
        "variables": ["age", "bmi", "sex", "smoker"], "quantiles": qs})
    assert result["kinds"] == {"age": "numeric", "bmi": "numeric", "sex": "categorical",
                               "smoker": "categorical"}
    stratum = result["strata"]["all"]
    assert stratum["n"] == {"count": 1000, "exact": True, "upper": 1000, "display": "1000",
                            "sites": {"A": 300, "B": 500, "C": 200}}
    for var in ("age", "bmi"):
        check_numeric(stratum["numeric"][var], pooled[var], qs)
    assert stratum["numeric"]["bmi"]["missing"] == 21
    for var in ("sex", "smoker"):
        counts = pooled[var].astype(str).value_counts()
        rows = {r["level"]: r for r in stratum["categorical"][var]}
        for level, n in counts.items():
            assert rows[level]["count"] == n and rows[level]["exact"]
            assert rows[level]["percent"] == pytest.approx(100 * n / 1000)
        assert rows["(missing)"]["count"] == 0 and rows["(missing)"]["exact"]  # derivably 0


def test_rare_level_suppressed_and_not_derivable(sites):
    paths, pooled = sites
    result = simulate_tables("summary", paths, params={"variables": ["grp"]})
    rows = {r["level"]: r for r in result["strata"]["all"]["categorical"]["grp"]}
    assert "rare" not in rows  # fewer than k everywhere: not even named, counted in (other)
    other = rows["(other)"]
    assert set(other["sites"].values()) == {"<10"}
    assert not other["exact"] and other["upper"] >= 9
    for site, n in zip("ABC", SIZES, strict=True):
        released = [r["sites"][site] for r in rows.values()]
        hidden = [v for v in released if isinstance(v, str)]
        # complementary suppression: the hidden cells' derivable sum is 0 or at least k
        assert len(hidden) >= 2 and n - sum(v for v in released if isinstance(v, int)) >= 10
    for level in ("a", "b", "c"):
        true = int((pooled.grp == level).sum())
        assert rows[level]["count"] <= true <= rows[level]["upper"]
        assert rows[level]["percent"] is None or rows[level]["exact"]


def test_crosstab_protected_along_rows_and_columns(sites):
    paths, pooled = sites
    result = simulate_tables("summary", paths, params={
        "variables": [], "crosstabs": [["sex", "grp"]]})
    tab = result["strata"]["all"]["crosstabs"][0]
    for site in "ABC":
        cells = {(c["row"], c["col"]): c["sites"][site] for c in tab["cells"]}
        rows = {r["level"]: r["sites"][site] for r in tab["row_totals"]}
        cols = {c["level"]: c["sites"][site] for c in tab["col_totals"]}
        lines = [([v for (r, _), v in cells.items() if r == row], total)
                 for row, total in rows.items()]
        lines += [([v for (_, c), v in cells.items() if c == col], total)
                  for col, total in cols.items()]
        for line, total in lines:
            hidden = [v for v in line if isinstance(v, str)]
            if isinstance(total, int) and hidden:
                room = total - sum(v for v in line if isinstance(v, int))
                assert len(hidden) >= 2 and (room == 0 or room >= 10)
    for cell in tab["cells"]:
        true = int(((pooled.sex == cell["row"]) & (pooled.grp == cell["col"])).sum())
        assert cell["count"] <= true <= cell["upper"]
        if cell["exact"]:
            assert cell["count"] == true


def test_by_stratifies_every_statistic(sites):
    paths, pooled = sites
    result = simulate_tables("summary", paths, params={
        "variables": ["age", "stage"], "categorical": ["stage"], "by": "sex",
        "quantiles": [0.5]})
    assert result["by"] == "sex" and set(result["strata"]) == {"F", "M"}
    for sex, part in pooled.groupby("sex"):
        stratum = result["strata"][sex]
        assert stratum["n"]["count"] == len(part) and stratum["n"]["exact"]
        check_numeric(stratum["numeric"]["age"], part.age, [0.5])
        rows = {r["level"]: r for r in stratum["categorical"]["stage"]}
        for level, n in part.stage.value_counts().items():
            assert rows[str(level)]["count"] == n and rows[str(level)]["exact"]


def test_small_site_withholds_a_variable(sites, tmp_path):
    paths, pooled = sites
    part = pd.read_csv(paths["C"])
    part.loc[5:, "bmi"] = np.nan  # five values left, fewer than k
    part.to_csv(paths["C"], index=False)
    result = simulate_tables("summary", paths, params={"variables": ["bmi"]})
    stats = result["strata"]["all"]["numeric"]["bmi"]
    assert stats["sites"] == ["A", "B"]
    assert stats["withheld_sites"] == {"C": "fewer than 10 non-missing values"}
    used = pooled.bmi.iloc[: SIZES[0] + SIZES[1]]
    check_numeric(stats, used, [0.25, 0.5, 0.75])


def test_bands_and_merged_bins_rules():
    rng = np.random.default_rng(5)
    for scale in (1e-3, 1.0, 250.0, 1e6):
        values = rng.normal(0, scale, 400) + 3 * scale
        for k in (5, 10, 20):
            lo, hi = band_min(values, k)
            width = hi - lo
            mantissa = width / 10 ** math.floor(math.log10(width))
            assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9
            assert lo <= values.min() < hi and ((values >= lo) & (values < hi)).sum() >= k
            lo, hi = band_max(values, k)
            assert lo < values.max() <= hi and ((values > lo) & (values <= hi)).sum() >= k
            counts = np.bincount(rng.integers(0, 1000, 300) ** 2 // 1000, minlength=1000)
            bins = merge_bins(counts, k)
            assert bins[0][0] == 0 and bins[-1][1] == 1000
            assert all(e == s2 for (_, e, _), (s2, _, _) in zip(bins, bins[1:], strict=False))
            assert all(c == 0 or c >= k for _, _, c in bins) and bins[0][2] and bins[-1][2]
            assert sum(c for _, _, c in bins) == counts.sum()
    released, rows, cols = release_crosstab({("x", "p"): 3, ("x", "q"): 40, ("y", "p"): 30,
                                             ("y", "q"): 50}, 10)
    # a 2×2 with released margins: one small cell hides all four
    assert set(released.values()) == {"<10"}
    assert rows == {"x": 43, "y": 80} and cols == {"p": 33, "q": 90}


def test_mixed_kinds_and_refusals(sites):
    paths, _ = sites
    part = pd.read_csv(paths["B"])
    part["age"] = part.age.astype(str) + "y"
    part.to_csv(paths["B"], index=False)
    with pytest.raises(InvalidInput) as info:
        simulate_tables("summary", paths, params={"variables": ["age"]})
    assert info.value.field == "params.categorical"
    pd.read_csv(paths["A"]).iloc[:6].to_csv(paths["A"], index=False)
    with pytest.raises(Refused, match="site A refused.*6 rows"):
        simulate_tables("summary", paths, params={"variables": ["sex"]})


@pytest.mark.parametrize(("params", "field"), [
    ({"variables": ["nosuch"]}, "params.variables"),
    ({"variables": ["age"], "categorical": ["nosuch"]}, "params.categorical"),
    ({"variables": ["age"], "by": "nosuch"}, "params.by"),
    ({"variables": [], "crosstabs": [["sex", "nosuch"]]}, "params.crosstabs"),
    ({"variables": [], "crosstabs": [["sex", "sex"]]}, "params.crosstabs"),
    ({"variables": ["age"], "quantiles": [0.5, 1.0]}, "params.quantiles"),
    ({"variables": []}, "params.variables"),
    ({"variables": ["age"], "bins": 10}, "params.bins"),
])
def test_bad_params_name_the_field(sites, params, field):
    paths, _ = sites
    with pytest.raises(InvalidInput) as info:
        simulate_tables("summary", paths, params=params)
    assert info.value.field == field


def test_cli_json_and_table(sites, capsys):
    paths, pooled = sites
    argv = ["sim", "summary", "--variables", "age,sex", "--crosstab", "sex:smoker",
            "--quantiles", "0.5", "--json"]
    for name, path in paths.items():
        argv += ["--table", f"{name}={path}"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    stratum = doc["strata"]["all"]
    assert rel(stratum["numeric"]["age"]["mean"], pooled.age.mean()) <= REL
    assert stratum["crosstabs"][0]["rows"] == "sex"
    assert set(doc["notes"]) == {"counts", "quantiles", "extremes"}
    assert run([a for a in argv if a != "--json"]) == 0
    text = capsys.readouterr().out
    assert "sex × smoker" in text and "q0.5" in text


@pytest.mark.parametrize(("extra", "field"), [
    (["--variables", "age", "--crosstab", "sexgrp"], "crosstab"),
    (["--variables", "age", "--quantiles", "0.5,x"], "quantiles"),
    (["--variables", "nosuch"], "params.variables"),
    (["--variables", "age", "--by", "nosuch"], "params.by"),
])
def test_cli_bad_input_exits_2_naming_field(sites, capsys, extra, field):
    paths, _ = sites
    assert run(["sim", "summary", "--table", f"A={paths['A']}", *extra, "--json"]) == 2
    captured = capsys.readouterr()
    assert field in captured.err and "Traceback" not in captured.err
