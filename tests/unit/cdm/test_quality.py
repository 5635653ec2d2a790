"""Data-quality checks count exactly what was planted, pass on clean data, and flag Eunomia."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.quality import assess, load_ranges, to_html
from healthspace.cdm.store import create_schema


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """Four persons and a handful of records, each flaw placed by hand."""
    path = tmp_path_factory.mktemp("quality") / "planted.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    con.execute("""INSERT INTO person (person_id, gender_concept_id, year_of_birth) VALUES
        (1, 8532, 1960), (2, 8507, 1980), (3, 9999, 1990),  -- 3: an invalid gender concept
        (4, 0, 1890)""")  # 4: unknown gender, 130 years old at the end of observation
    con.execute("""INSERT INTO observation_period VALUES
        (1, 1, '2010-01-01', '2020-12-31', 32817), (2, 2, '2015-01-01', '2020-12-31', 32817),
        (3, 3, '2015-01-01', '2020-12-31', 32817), (4, 4, '2015-01-01', '2020-12-31', 32817),
        (5, 99, '2015-01-01', '2020-12-31', 32817)""")  # 5: a period of an absent person
    con.execute("INSERT INTO death (person_id, death_date) VALUES (2, '1975-06-01')")  # unborn
    con.execute("""INSERT INTO visit_occurrence (visit_occurrence_id, person_id,
        visit_concept_id, visit_start_date) VALUES
        (1, 1, 9202, '2012-03-01'), (2, 1, 9202, '2021-06-01'),  -- 2: after the period ends
        (3, 3, 9202, '2016-01-01')""")
    con.execute("""INSERT INTO concept (concept_id, vocabulary_id, concept_code, concept_name)
        VALUES (9202, 'Visit', 'OP', 'Outpatient'), (10, 'LOINC', '4548-4', 'HbA1c'),
               (11, 'ICD10', 'E11.9', 'T2D')""")
    con.execute("""INSERT INTO condition_occurrence (condition_occurrence_id, person_id,
        condition_concept_id, condition_start_date) VALUES
        (1, 1, 11, '2012-03-01'), (2, 1, 11, '1950-01-01'),  -- 2: before birth
        (3, 3, 777, '2016-01-01'),                           -- 3: unknown concept id
        (4, 1, 11, '1850-01-01')""")                         # 4: before 1900 (and birth)
    con.execute("""INSERT INTO measurement (measurement_id, person_id, measurement_concept_id,
        measurement_date, value_as_number) VALUES
        (1, 1, 10, '2012-03-01', 7.5), (2, 1, 10, '2013-03-01', 80.0),  -- 2: HbA1c 80 %
        (3, 3, 10, '2016-01-01', NULL), (4, 2, 10, '1976-01-01', 6.0)""")  # 4: after death
    con.close()
    return path


def report_of(path: Path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return assess(con)
    finally:
        con.close()


def test_planted_flaws_are_counted_exactly(planted) -> None:
    checks = {c.id: c for c in report_of(planted).checks}

    def seen(check_id: str) -> tuple[int, int, str]:
        c = checks[check_id]
        return c.violations, c.denominator, c.status

    assert seen("gender_valid") == (1, 4, "fail")
    assert seen("gender_known") == (1, 4, "fail")  # 25 % > 5 %
    assert seen("age_0_120") == (1, 4, "fail")
    assert seen("death_after_birth") == (1, 1, "fail")
    assert seen("orphans_observation_period") == (1, 5, "fail")
    assert seen("orphans_visit_occurrence") == (0, 3, "pass")
    assert seen("visits_in_observation") == (1, 3, "fail")  # 33 % > 5 %
    assert seen("known_concepts_condition") == (1, 4, "fail")
    assert seen("known_concepts_visit") == (0, 3, "pass")
    assert seen("dates_in_range_condition") == (1, 4, "fail")
    assert seen("after_birth_condition") == (2, 4, "fail")
    assert seen("measurement_in_range") == (1, 3, "fail")  # the NULL value is not judged
    assert seen("measurement_value_present") == (1, 4, "pass")  # 25 % ≤ 50 %
    assert seen("before_death_measurement") == (1, 1, "fail")
    assert seen("required_person") == (0, 4, "pass")
    assert "known_concepts_drug" not in checks  # an empty table is not judged


def test_summary_completeness_and_what_is_published(planted) -> None:
    report = report_of(planted)
    s = report.summary
    assert s["passed"] + s["failed"] + s["not_applicable"] == s["checks"] == len(report.checks)
    assert s["score"] == round(s["passed"] / (s["passed"] + s["failed"]), 4)
    assert report.completeness["measurement"]["value_as_number"] == 0.25
    assert report.completeness["person"]["month_of_birth"] == 1.0
    published = report.published()
    assert "age_0_120" in published["failed_checks"]
    assert published["rates"] == {}  # four persons: too few rows for any rate to leave
    text = json.dumps(published)
    assert "violations" not in text and "denominator" not in text  # rates, never counts
    page = to_html(report, "planted")
    assert page.count("<tr class='fail'>") == s["failed"] and "HbA1c" not in page


def test_clean_synthetic_hospital_passes(synth_dir, tmp_path) -> None:
    store = tmp_path / "h1.duckdb"
    ingest_dir(store, synth_dir / "hospital_1")
    report = report_of(store)
    assert report.summary["failed"] == 0, [c.id for c in report.checks if c.status == "fail"]
    con = duckdb.connect(str(store), read_only=True)
    nulls = con.execute("SELECT avg(CASE WHEN visit_end_date IS NULL THEN 1 ELSE 0 END) "
                        "FROM visit_occurrence").fetchone()[0]
    con.close()
    assert report.completeness["visit_occurrence"]["visit_end_date"] == round(nulls, 4)
    in_range = {c.id: c for c in report.checks}["measurement_in_range"]
    assert in_range.denominator > 0  # the synthetic labs are judged against the table


def test_eunomia_orphan_periods_and_valueless_measurements_are_flagged(eunomia_store) -> None:
    checks = {c.id: c for c in report_of(eunomia_store).checks}
    orphans = checks["orphans_observation_period"]
    assert (orphans.violations, orphans.denominator, orphans.status) == (2649, 5343, "fail")
    values = checks["measurement_value_present"]
    assert (values.violations, values.denominator, values.status) == (44053, 44053, "fail")
    assert checks["orphans_condition_occurrence"].violations == 0


@pytest.fixture(scope="module")
def eunomia_store(tmp_path_factory) -> Path:
    from tests.conftest import require_eunomia

    store = tmp_path_factory.mktemp("eunomia_quality") / "e.duckdb"
    ingest_dir(store, require_eunomia())
    return store


def test_ranges_table_is_well_formed() -> None:
    ranges = load_ranges()
    assert ranges["4548-4"] == (2.0, 25.0, "%") and len(ranges) >= 20
    assert all(low < high for low, high, _ in ranges.values())


def test_cli_exit_codes_and_html(planted, synth_dir, tmp_path) -> None:
    page = tmp_path / "q.html"
    proc = subprocess.run([sys.executable, "-m", "healthspace", "node", "quality", "--store",
                           str(planted), "--json", "--html", str(page)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr  # a check failed: a partial result
    doc = json.loads(proc.stdout)
    assert doc["summary"]["failed"] >= 10 and "<table>" in page.read_text()
    store = tmp_path / "clean.duckdb"
    ingest_dir(store, synth_dir / "hospital_2")
    clean = subprocess.run([sys.executable, "-m", "healthspace", "node", "quality", "--store",
                            str(store)], capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "0 failed" in clean.stdout
    missing = subprocess.run([sys.executable, "-m", "healthspace", "node", "quality", "--store",
                              str(tmp_path / "nope.duckdb")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
