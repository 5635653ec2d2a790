"""pv: pooled 2×2 tables against pandas and scipy, the NSAID→GI-bleed signal, consent, cohorts,
suppression and the CLI contract."""

import json
import math
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from healthspace.analyses.execute import run_local
from healthspace.analyses.pv import disproportionality
from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput
from healthspace.governance.consent import ConsentRecord
from healthspace.governance.policy import UsagePolicy
from healthspace.sim import Site, load_site, simulate, simulate_tables

DRUGS = ["D1", "D2", "D3", "D4"]
EVENTS = ["E1", "E2", "E3"]


def make_reports(seed: int, n: int, start: int) -> pd.DataFrame:
    """Long spontaneous reports: D1 raises E1 five-fold; some reports have no event."""
    rng = np.random.default_rng(seed)
    rows = []
    for rid in range(start, start + n):
        drugs = [d for d, p in zip(DRUGS, [0.3, 0.5, 0.4, 0.2], strict=True) if rng.random() < p]
        drugs = drugs or ["D2"]
        p_e1 = 0.5 if "D1" in drugs else 0.1
        events = [e for e, p in zip(EVENTS, [p_e1, 0.3, 0.2], strict=True) if rng.random() < p]
        for d in drugs:
            for e in events or [None]:
                rows.append({"report_id": f"r{rid}", "drug": d, "event": e})
    return pd.DataFrame(rows)


@pytest.fixture
def report_tables(tmp_path):
    parts = [make_reports(1, 300, 0), make_reports(2, 400, 1000), make_reports(3, 250, 2000)]
    paths = {}
    for name, part in zip("ABC", parts, strict=True):
        paths[name] = tmp_path / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths, pd.concat(parts, ignore_index=True)


def reference_2x2(df: pd.DataFrame, drug: str, event: str) -> tuple[int, int, int, int]:
    """Independent 2×2 of reports: sets of report ids with the drug / with the event."""
    reports = set(df.report_id)
    with_drug = set(df.report_id[df.drug == drug])
    with_event = set(df.report_id[df.event == event])
    a = len(with_drug & with_event)
    b = len(with_drug - with_event)
    c = len(with_event - with_drug)
    return a, b, c, len(reports) - a - b - c


def test_table_mode_equals_pandas_and_scipy(report_tables):
    paths, pooled = report_tables
    result = simulate_tables("pv", paths, params={"source": "table"})
    assert result["N"] == pooled.report_id.nunique()
    exact = [p for p in result["pairs"] if p["exact"]]
    assert len(exact) >= 10
    for p in result["pairs"]:
        a, b, c, d = reference_2x2(pooled, p["drug"], p["event"])
        if not p["exact"]:
            assert p["a_is_lower_bound"] and p["a"] <= a <= p["a_upper_bound"]
            continue
        assert (p["a"], p["b"], p["c"], p["d"]) == (a, b, c, d)
        chi2 = chi2_contingency([[a, b], [c, d]], correction=True)[0]
        assert p["chi2"] == pytest.approx(chi2, rel=1e-12)
        prr = (a / (a + b)) / (c / (c + d))
        se = math.sqrt(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d))
        assert p["prr"] == pytest.approx(prr, rel=1e-12)
        assert p["prr_ci"] == pytest.approx([prr * math.exp(-1.959963984540054 * se),
                                             prr * math.exp(1.959963984540054 * se)], rel=1e-12)
        ror = a * d / (b * c)
        assert p["ror"] == pytest.approx(ror, rel=1e-12)
        assert p["signal"] == (prr >= 2 and chi2 >= 4 and a >= 3)
    top = result["pairs"][0]
    assert (top["drug"], top["event"], top["signal"]) == ("D1", "E1", True)
    assert "D1→E1" in result["signals"]
    assert result["signals"] == [f"{p['drug']}→{p['event']}" for p in result["pairs"]
                                 if p["signal"]]


def test_small_a_is_never_released(report_tables, tmp_path):
    paths, _ = report_tables
    df = pd.read_csv(paths["A"])
    rare = pd.DataFrame({"report_id": [f"x{i}" for i in range(3)], "drug": "D9", "event": "E9"})
    filler = pd.DataFrame({"report_id": [f"y{i}" for i in range(20)], "drug": "D9",
                           "event": "E2"})
    pd.concat([df, rare, filler]).to_csv(paths["A"], index=False)
    con = duckdb.connect()
    con.execute("CREATE TABLE analysis_data AS SELECT * FROM read_csv_auto(?)", [str(paths["A"])])
    partial = run_local(con, site="A", analysis="pv", params={"source": "table"}, cohort=None,
                        min_cell_size=10).partial
    assert all(n >= 10 for n in [*partial["drugs"].values(), *partial["events"].values()])
    assert "E9" not in partial["events"]  # 3 reports: not even named
    assert all(p["a"] == "<10" or p["a"] >= 10 for p in partial["pairs"])
    assert not any(p["drug"] == "D9" and p["event"] == "E9" for p in partial["pairs"])
    result = simulate_tables("pv", paths, params={"source": "table", "drugs": ["D9"]})
    pair = next(p for p in result["pairs"] if p["event"] == "E2")
    assert pair["a_by_site"] == {"A": 20, "B": "<10", "C": "<10"}
    assert pair["a_is_lower_bound"] and pair["a_upper_bound"] == 20 + 9 + 9


def test_disproportionality_edge_cases():
    out = disproportionality(5, 0, 0, 100)
    assert out["prr"] is None and out["ror"] is None and out["signal"] is True
    out = disproportionality(2, 10, 1, 1000)
    assert out["signal"] is False  # a < 3
    assert disproportionality(0, 10, 10, 100)["signal"] is False


# --- CDM mode on the synthetic hospitals -----------------------------------------------------

SLIM = ("person", "observation_period", "drug_exposure", "condition_occurrence", "concept")


@pytest.fixture(scope="module")
def hospitals(synth_dir, tmp_path_factory):
    """The three synthetic hospitals (only the tables pv reads), at a policy of k = 5: with
    4,000 persons a site has 7–9 NSAID→GI-bleed reports, all hidden at k = 10."""
    out = tmp_path_factory.mktemp("pv_sites")
    sites = {}
    for i in (1, 2, 3):
        folder = out / f"hospital_{i}"
        folder.mkdir()
        for table in SLIM:
            shutil.copy(synth_dir / f"hospital_{i}" / f"{table}.csv", folder)
        site = load_site(folder)
        site.policy = UsagePolicy(min_cell_size=5)
        sites[f"hospital_{i}"] = site
    yield sites, synth_dir
    for site in sites.values():
        site.con.close()


def reference_cdm(folder, drug_level, event_level, window, drug, event):
    """The documented definitions in pandas: (a, b, c, d) of one pair at one site, with
    person-time cells of ``window`` days from each observation period's start."""
    op = pd.read_csv(folder / "observation_period.csv",
                     parse_dates=["observation_period_start_date",
                                  "observation_period_end_date"])
    op["n"] = ((op.observation_period_end_date - op.observation_period_start_date).dt.days
               + 1) // window
    N = int((op.n - 1).clip(lower=0).sum())

    def cells(frame, date, shift):
        merged = frame.merge(op, on="person_id")
        j = (merged[date] - merged.observation_period_start_date).dt.days // window + shift
        merged["cell"] = list(zip(merged.person_id, merged.observation_period_start_date, j,
                                  strict=True))
        return merged[(j >= 1) & (j <= merged.n - 1)]

    exp = pd.read_csv(folder / "drug_exposure.csv", usecols=["person_id", "drug_source_value",
                                                             "drug_exposure_start_date"],
                      parse_dates=["drug_exposure_start_date"]).dropna()
    exp = exp[exp.drug_source_value.str[:drug_level] == drug]
    drug_cells = set(cells(exp, "drug_exposure_start_date", 1).cell)
    cond = pd.read_csv(folder / "condition_occurrence.csv",
                       usecols=["person_id", "condition_source_value", "condition_start_date"],
                       parse_dates=["condition_start_date"]).dropna()
    cond["code"] = cond.condition_source_value.str[:event_level]
    onset = cond.groupby(["person_id", "code"]).condition_start_date.min().reset_index()
    onset = onset[onset.code == event]
    event_cells = set(cells(onset, "condition_start_date", 0).cell)
    a = len(drug_cells & event_cells)
    b = len(drug_cells) - a
    c = len(event_cells) - a
    return np.array([a, b, c, N - a - b - c])


def test_nsaid_gi_bleed_is_a_signal_and_matches_reference(hospitals):
    sites, synth_dir = hospitals
    params = {"drug_level": 4, "drugs": ["M01A"], "events": ["K92"]}
    result = simulate("pv", sites, params=params, min_cell_size=5)
    pair = next(p for p in result["pairs"] if (p["drug"], p["event"]) == ("M01A", "K92"))
    assert pair["signal"] and pair["exact"] and pair["prr"] >= 2 and pair["chi2"] >= 4
    assert "M01A→K92" in result["signals"]
    ref = sum(reference_cdm(synth_dir / name, 4, 3, 30, "M01A", "K92") for name in sites)
    assert [pair[x] for x in "abcd"] == ref.tolist()
    assert pair["chi2"] == pytest.approx(chi2_contingency(ref.reshape(2, 2))[0], rel=1e-12)
    # Full ATC codes: naproxen→K92 has fewer than 5 reports at hospitals 2 and 3, suppressed.
    result = simulate("pv", sites, params={"drugs": ["M01AB05"], "events": ["K92"]},
                      min_cell_size=5)
    pair = result["pairs"][0]
    true_a = sum(reference_cdm(synth_dir / name, 7, 3, 30, "M01AB05", "K92")[0]
                 for name in sites)
    assert pair["a_by_site"]["hospital_2"] == "<5"
    assert pair["a_is_lower_bound"] and not pair["exact"]
    assert pair["a"] < true_a <= pair["a_upper_bound"]


def test_consent_and_cohort_restrict_the_population(hospitals):
    sites, synth_dir = hospitals
    params = {"drug_level": 4, "drugs": ["M01A"], "events": ["K92"]}
    base = simulate("pv", sites, params=params, min_cell_size=5)
    nsaid = next(p for p in base["pairs"] if p["event"] == "K92")
    con = sites["hospital_2"].con
    bled = [int(r[0]) for r in con.execute(
        "SELECT DISTINCT d.person_id FROM drug_exposure d JOIN condition_occurrence c "
        "USING (person_id) WHERE d.drug_source_value LIKE 'M01A%' "
        "AND c.condition_source_value LIKE 'K92%'").fetchall()]
    cells = con.execute(  # the person-time cells of those persons, as documented
        "SELECT sum(greatest(floor((datediff('day', observation_period_start_date, "
        "observation_period_end_date) + 1) / 30) - 1, 0)) FROM observation_period "
        "WHERE person_id IN (SELECT unnest(?))", [bled]).fetchone()[0]
    withheld = [ConsentRecord(person_id=pid, tier="withheld") for pid in bled]
    restricted = dict(sites)
    restricted["hospital_2"] = Site(con, policy=sites["hospital_2"].policy, consent=withheld)
    after = simulate("pv", restricted, params=params, min_cell_size=5)
    assert after["sites"]["hospital_2"] == base["sites"]["hospital_2"] - cells
    pair = next(p for p in after["pairs"] if p["event"] == "K92")
    assert pair["a_by_site"]["hospital_2"] == "<5"
    assert pair["a"] == nsaid["a"] - nsaid["a_by_site"]["hospital_2"]
    # A cohort of NSAID users: every NSAID cell is still there, the population shrinks.
    cohort = {"entry": {"drug": {"codes": ["ATC:M01A%"]}}}
    within = simulate("pv", sites, params=params, cohort=cohort, min_cell_size=5)
    pair = next(p for p in within["pairs"] if p["event"] == "K92")
    assert (pair["a"], pair["a"] + pair["b"]) == (nsaid["a"], nsaid["a"] + nsaid["b"])
    assert within["N"] < base["N"]


@pytest.mark.parametrize(("params", "field"), [
    ({"source": "table", "drug": "nosuch"}, "params.drug"),
    ({"source": "table", "drug_level": 4}, "params.drug_level"),
    ({"report": "id"}, "params.report"),
    ({"drugs": ["M01AE01X"]}, "params.drugs"),
    ({"source": "cdm"}, "params.source"),
    ({"source": "nosuch"}, "params.source"),
])
def test_bad_params_name_the_field(report_tables, params, field):
    paths, _ = report_tables
    with pytest.raises(InvalidInput) as info:
        simulate_tables("pv", paths, params=params)
    assert info.value.field == field


def test_cli_table_mode(report_tables, capsys):
    paths, pooled = report_tables
    argv = ["sim", "pv", "--source", "table", "--events", "E1,E2", "--json"]
    for name, path in paths.items():
        argv += ["--table", f"{name}={path}"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"pairs", "signals", "N", "sites"}
    assert {p["event"] for p in doc["pairs"]} <= {"E1", "E2"}
    assert doc["N"] == pooled.report_id.nunique()
    assert run([a for a in argv if a != "--json"]) == 0
    text = capsys.readouterr().out
    assert "PRR" in text and "D1→E1" in text
    assert run([*argv, "--window-days", "60"]) == 2
    assert "window_days" in capsys.readouterr().err
