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
