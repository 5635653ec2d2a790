"""cohort_count: node-side counts, breakdown and suppression; combine rules."""

import duckdb
import pytest

from healthspace.analyses import registry
from healthspace.analyses.base import Final
from healthspace.analyses.cohort_count import AGE_BANDS, breakdown_keys
from healthspace.analyses.execute import run_local
from healthspace.cdm.schema import TABLES, ddl

E11 = 2_000_000_001


def make_site(people):
    """people: list of (person_id, gender_concept_id, year_of_birth, dx_date or None)."""
    con = duckdb.connect()
    for table in TABLES:
        con.execute(ddl(table))
    con.execute("INSERT INTO concept (concept_id, vocabulary_id, concept_code) "
                "VALUES (?, 'ICD10', 'E11.9')", [E11])
    for i, (pid, gender, yob, dx) in enumerate(people):
        con.execute("INSERT INTO person (person_id, gender_concept_id, year_of_birth) "
                    "VALUES (?, ?, ?)", [pid, gender, yob])
        if dx:
            con.execute("INSERT INTO condition_occurrence (condition_occurrence_id, person_id, "
                        "condition_concept_id, condition_start_date) VALUES (?, ?, ?, ?)",
                        [i + 1, pid, E11, dx])
    return con


COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}


def count(con, k=10, **params):
    return run_local(con, site="s", analysis="cohort_count", params=params, cohort=COHORT,
                     min_cell_size=k)


def test_count_and_breakdown_released_when_large():
    people = [(i, 8532, 1970, "2020-01-01") for i in range(30)]  # 50-59, F
    people += [(100 + i, 8507, 1990, "2020-06-01") for i in range(25)]  # 30-39, M
    run = count(make_site(people))
    assert run.partial["count"] == 55 and run.records == 55
    cells = {(c["age_band"], c["sex"]): c["count"] for c in run.partial["breakdown"]}
    assert set(cells) == set(breakdown_keys())  # fixed grid: presence is never revealed
    assert cells[("50-59", "F")] == 30 and cells[("30-39", "M")] == 25
    assert all(v == "<10" for key, v in cells.items() if key not in {("50-59", "F"),
                                                                      ("30-39", "M")})


def test_small_cell_gets_complementary_suppression():
    people = [(i, 8532, 1970, "2020-01-01") for i in range(30)]
    people += [(100 + i, 8507, 1990, "2020-06-01") for i in range(12)]
    people += [(200, 8507, 1930, "2020-06-01")]  # one 90+ man
    cells = {(c["age_band"], c["sex"]): c["count"]
             for c in count(make_site(people)).partial["breakdown"]}
    assert cells[("90+", "M")] == "<10"
    # Otherwise 43 - 30 - 12 would reveal the single person; the next-smallest cell is hidden.
    assert cells[("30-39", "M")] == "<10" and cells[("50-59", "F")] == 30


def test_small_total_is_suppressed_and_no_breakdown_leaves():
    run = count(make_site([(i, 8532, 1970, "2020-01-01") for i in range(9)]))
    assert run.partial == {"count": "<10", "min_cell_size": 10, "breakdown": None}


def test_node_floor_and_custom_k():
    con = make_site([(i, 8532, 1970, "2020-01-01") for i in range(12)])
    assert count(con, k=15).partial["count"] == "<15"
    assert count(con, k=3).partial["min_cell_size"] == 5  # never below the floor


def test_unknown_sex_and_impossible_age_fold_into_unknown():
    people = [(i, 8532, 1970, "2020-01-01") for i in range(20)]
    people += [(50 + i, 0, 1970, "2020-01-01") for i in range(10)]
    people += [(80 + i, 8507, 2030, "2020-01-01") for i in range(10)]
    cells = {(c["age_band"], c["sex"]): c["count"]
             for c in count(make_site(people)).partial["breakdown"]}
    assert cells[("unknown", "unknown")] == 20
    assert AGE_BANDS[-1] == "90+"


def test_combine_total_and_lower_bound():
    impl = registry.get("cohort_count")
    params = impl.parse_params({})
    partials = {"b": {"count": 40, "min_cell_size": 10, "breakdown": []},
                "a": {"count": "<10", "min_cell_size": 10, "breakdown": None},
                "c": {"count": 15, "min_cell_size": 10, "breakdown": None}}
    out = impl.combine(partials, params, {}, 1)
    assert isinstance(out, Final)
    assert out.result["sites"] == {"a": "<10", "b": 40, "c": 15}
    assert list(out.result["sites"]) == ["a", "b", "c"]
    assert out.result["total"] == 55 and out.result["total_is_lower_bound"] is True
    full = impl.combine({"b": partials["b"], "c": partials["c"]}, params, {}, 1)
    assert full.result["total_is_lower_bound"] is False


def test_bad_params_name_the_field():
    from healthspace.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        registry.get("cohort_count").parse_params({"breakdown": "maybe", "x": 1})
    assert info.value.field.startswith("params.")
    with pytest.raises(InvalidInput) as info:
        registry.get("no_such_analysis")
    assert info.value.field == "analysis"


# --- differential privacy and obfuscation ---------------------------------------------------

E11_COHORT_YAML = "entry:\n  condition:\n    codes: ['ICD10:E11%']\n"


@pytest.fixture(scope="module")
def synth_sites(synth_dir):
    return {f"hospital_{i}": synth_dir / f"hospital_{i}" for i in (1, 2)}


def test_dp_counts_in_simulation(synth_sites):
    from healthspace.sim import simulate_dirs

    kwargs = {"cohort": COHORT}
    exact = simulate_dirs("cohort_count", synth_sites, params={}, **kwargs)
    noisy = simulate_dirs("cohort_count", synth_sites, params={"dp_epsilon": 1.0}, **kwargs)
    assert noisy["dp"] is True
    assert noisy["epsilon"] == {"sites": {"hospital_1": 1.0, "hospital_2": 1.0}, "study": 2.0}
    for name, value in noisy["sites"].items():
        assert abs(value - exact["sites"][name]) <= 3 * noisy["intervals"][name]
    assert noisy["total"] == sum(noisy["sites"].values())
    assert abs(noisy["total"] - exact["total"]) <= 3 * noisy["total_interval"]
    cells = [c["count"] for b in noisy["breakdown"].values() for c in b]
    assert len(cells) == 2 * len(breakdown_keys()) and all(isinstance(c, int) for c in cells)
    # Exact counts show small cells as "<10"; DP output needs no suppression labels.
    assert any(c["count"] == "<10" for b in exact["breakdown"].values() for c in b)
    assert noisy["cell_intervals"] == {"hospital_1": 3, "hospital_2": 3}


def test_dp_without_breakdown_spends_epsilon_on_the_count():
    con = make_site([(i, 8532, 1970, "2020-01-01") for i in range(3)])
    run = count(con, dp_epsilon=2.0, breakdown=False)
    assert run.partial["breakdown"] is None and run.partial["epsilon"] == 2.0
    assert isinstance(run.partial["count"], int) and run.partial["half_width"] == 1
    assert run.records == max(run.partial["count"], 0)  # metrics never carry the exact count


def test_obfuscated_counts():
    people = [(i, 8532, 1970, "2020-01-01") for i in range(60)]
    run = count(make_site(people), obfuscate=True)
    assert run.partial["obfuscated"] is True and run.partial["count"] % 5 == 0
    assert 50 <= run.partial["count"] <= 70
    cells = {(c["age_band"], c["sex"]): c["count"] for c in run.partial["breakdown"]}
    assert cells[("90+", "M")] == "≤ 10"
    small = count(make_site(people[:4]), obfuscate=True, k=15).partial
    assert small["count"] == "≤ 15" and small["breakdown"] is None
    impl = registry.get("cohort_count")
    out = impl.combine({"a": run.partial, "b": small}, impl.parse_params({}), {}, 1)
    assert out.result["obfuscated"] is True and out.result["total_is_lower_bound"] is True
    assert out.result["total"] == run.partial["count"]


@pytest.mark.parametrize(("params", "field"), [
    ({"dp_epsilon": 0}, "params.dp_epsilon"),
    ({"dp_epsilon": -1}, "params.dp_epsilon"),
    ({"dp_epsilon": 11}, "params.dp_epsilon"),
    ({"dp_epsilon": 1, "obfuscate": True}, "params.obfuscate"),
])
def test_bad_dp_params_name_the_field(params, field):
    from healthspace.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        registry.get("cohort_count").parse_params(params)
    assert info.value.field == field


def test_cli_sim_count_dp_json(capsys, synth_sites, tmp_path):
    import json

    from healthspace.cli.main import run

    cohort = tmp_path / "c.yaml"
    cohort.write_text(E11_COHORT_YAML)
    sites = [f"--site={name}={path}" for name, path in synth_sites.items()]
    assert run(["sim", "count", *sites, "--cohort", str(cohort), "--dp-epsilon", "1",
                "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dp"] is True and doc["epsilon"]["study"] == 2.0
    assert doc["total"] == sum(doc["sites"].values())
    assert run(["sim", "count", *sites, "--cohort", str(cohort), "--dp-epsilon", "1",
                "--obfuscate"]) == 2
    assert "params.obfuscate" in capsys.readouterr().err
    assert run(["sim", "count", *sites, "--cohort", str(cohort), "--dp-epsilon", "0.5",
                "--no-breakdown"]) == 0
    assert "± " in capsys.readouterr().out


def test_policy_count_release_obfuscated_applies_whatever_the_study_asks(synth_sites):
    from healthspace.core.errors import Refused
    from healthspace.governance.policy import UsagePolicy, release_params
    from healthspace.sim import load_site, simulate

    policy = UsagePolicy(count_release="obfuscated")
    assert release_params(policy, "cohort_count", {"breakdown": True}) == {
        "breakdown": True, "obfuscate": True}
    assert release_params(policy, "cohort_count", {"dp_epsilon": 1.0}) == {"dp_epsilon": 1.0}
    assert release_params(policy, "glm", {"formula": "y ~ x"}) == {"formula": "y ~ x"}
    assert release_params(UsagePolicy(), "cohort_count", {}) == {}
    sites = {name: load_site(path) for name, path in synth_sites.items()}
    try:
        exact = simulate("cohort_count", sites, params={}, cohort=COHORT)
        sites["hospital_2"].policy = policy
        mixed = simulate("cohort_count", sites, params={}, cohort=COHORT)
        assert mixed["sites"]["hospital_1"] == exact["sites"]["hospital_1"]  # its own rules
        assert mixed["obfuscated"] is True
        obfuscated = mixed["sites"]["hospital_2"]
        assert isinstance(obfuscated, int) and obfuscated % 5 == 0
        assert abs(obfuscated - exact["sites"]["hospital_2"]) <= 10 + 5  # clamp, then bin
        with pytest.raises(Refused, match="distinct"):
            simulate("cohort_count", sites, params={"distinct": True}, cohort=COHORT)
    finally:
        for site in sites.values():
            site.con.close()
