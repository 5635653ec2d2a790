"""Ingest of OMOP CSV folders: the real Eunomia GiBleed sample and small synthetic edge cases."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.ingest import IngestReport, ingest_dir, load_into
from healthspace.cdm.schema import TABLES
from healthspace.cdm.store import META_TABLE, create_schema, open_store
from healthspace.core.errors import IngestError, InvalidInput

EUNOMIA = (
    Path(
        os.environ.get("HEALTHSPACE_SHARED_DATA")
        or Path(__file__).resolve().parents[4] / "shared" / "data"
    )
    / "eunomia_gibleed"
)

EUNOMIA_ROWS = {
    "person": 2694,
    "observation_period": 5343,
    "visit_occurrence": 1037,
    "condition_occurrence": 65332,
    "drug_exposure": 67707,
    "procedure_occurrence": 37409,
    "measurement": 44053,
    "death": 0,
    "cost": 0,
    "payer_plan_period": 0,
    "location": 0,
    "care_site": 0,
    "concept": 444,
    "concept_ancestor": 65690,
}


# --- the real Eunomia GiBleed sample (CDM v5.3, loaded once per module) --------------


@pytest.fixture(scope="module")
def eunomia(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[IngestReport, duckdb.DuckDBPyConnection]]:
    if not EUNOMIA.is_dir():
        message = f"Eunomia sample not found at {EUNOMIA} (set HEALTHSPACE_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    store = tmp_path_factory.mktemp("eunomia") / "node.duckdb"
    report = ingest_dir(store, EUNOMIA)
    con = open_store(store)
    yield report, con
    con.close()


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_eunomia_row_counts(eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection]) -> None:
    report, con = eunomia
    assert report.tables == EUNOMIA_ROWS
    for table, rows in EUNOMIA_ROWS.items():
        assert scalar(con, f"SELECT count(*) FROM {table}") == rows, table
    assert report.seconds < 30


def test_eunomia_orphans_are_loaded_and_counted(
    eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection],
) -> None:
    report, con = eunomia
    assert report.orphans == {"observation_period": 2649}
    orphan_sql = (
        "SELECT count(*) FROM observation_period o "
        "WHERE o.person_id NOT IN (SELECT person_id FROM person)"
    )
    assert scalar(con, orphan_sql) == 2649


def test_eunomia_reference_facts(eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection]) -> None:
    _, con = eunomia
    gi_bleed = (
        "SELECT count(DISTINCT person_id) FROM condition_occurrence "
        "WHERE condition_concept_id = 192671"
    )
    assert scalar(con, gi_bleed) == 479
    genders = con.execute(
        "SELECT gender_concept_id, count(*) FROM person GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert genders == [(8507, 1321), (8532, 1373)]
    assert con.execute("SELECT min(year_of_birth), max(year_of_birth) FROM person").fetchall() == [
        (1908, 1986)
    ]


def test_eunomia_v53_columns_are_renamed(
    eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection],
) -> None:
    report, con = eunomia
    assert report.renamed_columns == {
        "visit_occurrence": {
            "admitting_source_concept_id": "admitted_from_concept_id",
            "admitting_source_value": "admitted_from_source_value",
            "discharge_to_concept_id": "discharged_to_concept_id",
            "discharge_to_source_value": "discharged_to_source_value",
        },
        # The v5.3 specification misspells this column; it is mapped, not dropped.
        "cost": {"reveue_code_source_value": "revenue_code_source_value"},
    }
    assert scalar(con, "SELECT count(admitted_from_concept_id) FROM visit_occurrence") == 1037
    assert scalar(con, "SELECT count(discharged_to_concept_id) FROM visit_occurrence") == 1037


def test_eunomia_tables_outside_the_subset_are_skipped(
    eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection],
) -> None:
    report, _ = eunomia
    for name in (
        "condition_era.csv",
        "drug_era.csv",
        "note.csv",
        "cdm_source.csv",
        "vocabulary.csv",
    ):
        assert name in report.skipped_files
    assert len(report.skipped_files) == 23
    assert report.identity_file is None
    # The v5.3 DDL misspells cost.revenue_code_source_value; the column is ignored and listed.
    assert report.ignored_columns == {}


def test_eunomia_iso_timestamps_load(
    eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection],
) -> None:
    _, con = eunomia
    assert scalar(con, "SELECT count(birth_datetime) FROM person") == 2694
    assert scalar(con, "SELECT typeof(any_value(visit_start_datetime)) FROM visit_occurrence") == (
        "TIMESTAMP"
    )
    mismatched = (
        "SELECT count(*) FROM visit_occurrence "
        "WHERE CAST(visit_start_datetime AS DATE) <> visit_start_date"
    )
    assert scalar(con, mismatched) == 0


def test_eunomia_repeated_event_ids_are_counted_not_fatal(
    eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection],
) -> None:
    report, con = eunomia
    assert report.duplicate_ids == {"drug_exposure": 4384, "measurement": 2183}
    assert (
        scalar(con, "SELECT count(*) - count(DISTINCT drug_exposure_id) FROM drug_exposure") == 4384
    )


def test_eunomia_metadata_table(eunomia: tuple[IngestReport, duckdb.DuckDBPyConnection]) -> None:
    report, con = eunomia
    rows = con.execute(
        f"SELECT table_name, rows, source_file, ingested_at, report FROM {META_TABLE}"
    ).fetchall()
    assert {r[0] for r in rows} == set(TABLES)
    by_table = {r[0]: r for r in rows}
    assert by_table["person"][1:3] == (2694, "person.csv")
    assert report.ingested_at is not None and report.ingested_at.endswith("Z")
    assert by_table["person"][3] == report.ingested_at
    stored = json.loads(by_table["person"][4])
    assert stored["tables"] == EUNOMIA_ROWS
    assert stored["orphans"] == {"observation_period": 2649}
    assert json.loads(json.dumps(report.to_dict()))["tables"] == EUNOMIA_ROWS


# --- small synthetic folders ------------------------------------------------------

PERSON = "person_id,gender_concept_id,year_of_birth,person_source_value\n"


def folder(root: Path, **files: str) -> Path:
    """Write ``name=text`` files (``person_csv`` -> ``person.csv``) into a fresh folder."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (src / name.replace("_csv", ".csv")).write_text(text, encoding="utf-8")
    return src


def load(src: Path) -> tuple[IngestReport, duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    create_schema(con)
    return load_into(con, src), con


def error_of(src: Path) -> IngestError:
    with pytest.raises(IngestError) as info:
        load(src)
    return info.value


def test_upper_case_file_names_and_headers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "PERSON.CSV").write_text("PERSON_ID,GENDER_CONCEPT_ID,YEAR_OF_BIRTH\n1,8507,1950\n")
    (src / "Observation_Period.csv").write_text(
        "OBSERVATION_PERIOD_ID,PERSON_ID,OBSERVATION_PERIOD_START_DATE,OBSERVATION_PERIOD_END_DATE\n"
        "10,1,2001-01-01,2010-12-31\n"
    )
    report, con = load(src)
    assert report.tables == {"person": 1, "observation_period": 1}
    assert report.files == {"person": "PERSON.CSV", "observation_period": "Observation_Period.csv"}
    assert con.execute("SELECT * FROM observation_period").fetchall()[0][:3] == (
        10,
        1,
        datetime.date(2001, 1, 1),
    )


def test_gzip_files_load(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "person.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write(PERSON + "1,8507,1950,a\n2,8532,1960,b\n")
    report, con = load(src)
    assert report.tables == {"person": 2}
    assert report.files == {"person": "person.csv.gz"}


def test_negative_and_huge_ids_are_exact(tmp_path: Path) -> None:
    ids = [-5, 2**53 + 1, 2**63 - 1, -(2**63)]
    body = "".join(f"{i},8507,1950,p{n}\n" for n, i in enumerate(ids))
    _, con = load(folder(tmp_path, person_csv=PERSON + body))
    assert [
        r[0] for r in con.execute("SELECT person_id FROM person ORDER BY 1").fetchall()
    ] == sorted(ids)


def test_id_beyond_64_bits_is_an_error(tmp_path: Path) -> None:
    err = error_of(folder(tmp_path, person_csv=PERSON + f"1,8507,1950,a\n{2**63},8507,1950,b\n"))
    assert (err.file, err.row, err.column) == ("person.csv", 2, "person_id")
    assert str(2**63) in err.message


def test_values_are_trimmed_and_blank_is_null(tmp_path: Path) -> None:
    text = (
        "person_id,gender_concept_id,year_of_birth,person_source_value,gender_source_value\n"
        '1, 8507 ,1950,  abc  ,"  M "\n'
        '2,,1960,"   ",\t\n'
    )
    _, con = load(folder(tmp_path, person_csv=text))
    rows = con.execute(
        "SELECT person_id, gender_concept_id, person_source_value, gender_source_value "
        "FROM person ORDER BY 1"
    ).fetchall()
    assert rows == [(1, 8507, "abc", "M"), (2, None, None, None)]


def test_bad_date_names_file_row_and_column(tmp_path: Path) -> None:
    text = (
        "observation_period_id,person_id,observation_period_start_date,observation_period_end_date\n"
        "1,1,2001-01-01,2002-01-01\n"
        "2,2,2001-13-01,2002-01-01\n"
    )
    err = error_of(
        folder(tmp_path, person_csv=PERSON + "1,8507,1950,a\n", observation_period_csv=text)
    )
    assert (err.file, err.row, err.column) == (
        "observation_period.csv",
        2,
        "observation_period_start_date",
    )
    assert "'2001-13-01'" in err.message and "YYYY-MM-DD" in err.message
    assert str(err).startswith(
        "file observation_period.csv, row 2, column observation_period_start_date"
    )


def test_rows_are_data_records_not_file_lines(tmp_path: Path) -> None:
    # A quoted value spanning three lines: the bad value is on file line 6 but is data row 3.
    text = PERSON + '1,8507,1950,"multi\nline\nvalue"\n2,8532,1960,b\n3,8532,19x0,c\n'
    err = error_of(folder(tmp_path, person_csv=text))
    assert (err.row, err.column) == (3, "year_of_birth")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("19x0", "whole number"),
        ("1950.5", "whole number"),
        ("1e3", "whole number"),
        ("0x7AE", "whole number"),
    ],
)
def test_bad_integers_are_refused_never_rounded(tmp_path: Path, value: str, expected: str) -> None:
    err = error_of(folder(tmp_path, person_csv=PERSON + f"1,8507,1950,a\n2,8507,{value},b\n"))
    assert (err.file, err.row, err.column) == ("person.csv", 2, "year_of_birth")
    assert repr(value) in err.message and expected in err.message


def test_whole_number_with_zero_fraction_loads(tmp_path: Path) -> None:
    _, con = load(folder(tmp_path, person_csv=PERSON + "1.0,8507.00,1950,a\n"))
    assert con.execute("SELECT person_id, gender_concept_id FROM person").fetchall() == [(1, 8507)]


def test_non_finite_number_is_refused(tmp_path: Path) -> None:
    text = (
        "measurement_id,person_id,measurement_date,value_as_number\n"
        "1,1,2020-01-01,4.5\n2,1,2020-01-02,nan\n"
    )
    err = error_of(folder(tmp_path, measurement_csv=text))
    assert (err.file, err.row, err.column) == ("measurement.csv", 2, "value_as_number")


def test_missing_required_value(tmp_path: Path) -> None:
    err = error_of(folder(tmp_path, person_csv=PERSON + "1,8507,1950,a\n2,8532, ,b\n"))
    assert (err.file, err.row, err.column) == ("person.csv", 2, "year_of_birth")
    assert "required value is empty" in err.message


def test_missing_required_varchar_value(tmp_path: Path) -> None:
    text = "concept_id,vocabulary_id,concept_code\n1,SNOMED,123\n2,  ,456\n"
    err = error_of(folder(tmp_path, concept_csv=text))
    assert (err.file, err.row, err.column) == ("concept.csv", 2, "vocabulary_id")


def test_missing_required_column(tmp_path: Path) -> None:
    err = error_of(folder(tmp_path, person_csv="person_id,gender_concept_id\n1,8507\n"))
    assert (err.file, err.row, err.column) == ("person.csv", None, "year_of_birth")


def test_duplicate_person_id(tmp_path: Path) -> None:
    body = "7,8507,1950,a\n8,8532,1960,b\n7,8532,1970,c\n"
    err = error_of(folder(tmp_path, person_csv=PERSON + body))
    assert (err.file, err.row, err.column) == ("person.csv", 3, "person_id")
    assert "duplicate person_id 7 (first seen in row 1)" in err.message


def test_unknown_columns_are_ignored_and_listed(tmp_path: Path) -> None:
    text = "person_id,Favourite_Colour,year_of_birth,gender_concept_id\n1,blue,1950,8507\n"
    report, con = load(folder(tmp_path, person_csv=text))
    assert report.ignored_columns == {"person": ["Favourite_Colour"]}
    assert "month_of_birth" in report.missing_columns["person"]
    assert con.execute(
        "SELECT person_id, year_of_birth, month_of_birth FROM person"
    ).fetchall() == [(1, 1950, None)]


def test_timestamp_formats(tmp_path: Path) -> None:
    text = "person_id,year_of_birth,birth_datetime\n"
    text += "1,2001,2001-02-03 04:05:06\n2,2001,2001-02-03T04:05:06Z\n"
    text += "3,2001,2001-02-03\n4,2001,2001-02-03T04:05:06+00:00\n5,2001,2001-02-03T04:05:06.250Z\n"
    _, con = load(folder(tmp_path, person_csv=text))
    got = [
        r[0] for r in con.execute("SELECT birth_datetime FROM person ORDER BY person_id").fetchall()
    ]
    at = datetime.datetime(2001, 2, 3, 4, 5, 6)
    assert got == [at, at, datetime.datetime(2001, 2, 3), at, at.replace(microsecond=250000)]


def test_timestamp_with_local_offset_is_refused(tmp_path: Path) -> None:
    text = "person_id,year_of_birth,birth_datetime\n1,2001,2001-02-03T04:05:06+08:00\n"
    err = error_of(folder(tmp_path, person_csv=text))
    assert (err.row, err.column) == (1, "birth_datetime")


def test_identity_file_is_reported_not_loaded(tmp_path: Path) -> None:
    src = folder(
        tmp_path, person_csv=PERSON + "1,8507,1950,a\n", identity_csv="person_id,national_id\n1,X\n"
    )
    report, con = load(src)
    assert report.identity_file == str((src / "identity.csv").resolve())
    assert report.tables == {"person": 1}
    assert report.skipped_files == []
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert "identity" not in tables


def test_unknown_tables_are_skipped_and_listed(tmp_path: Path) -> None:
    src = folder(
        tmp_path, person_csv=PERSON + "1,8507,1950,a\n", condition_era_csv="x\n1\n", NOTE_csv="y\n"
    )
    (src / "README.md").write_text("not data")
    report, _ = load(src)
    assert report.skipped_files == ["NOTE.csv", "condition_era.csv"]


def test_all_tables_exist_when_only_some_are_loaded(tmp_path: Path) -> None:
    _, con = load(folder(tmp_path, person_csv=PERSON + "1,8507,1950,a\n"))
    for table in TABLES:
        expected = 1 if table == "person" else 0
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (expected,)


def test_conflicting_v53_and_v54_columns(tmp_path: Path) -> None:
    text = (
        "visit_occurrence_id,person_id,visit_start_date,admitting_source_concept_id,"
        "admitted_from_concept_id\n1,1,2020-01-01,0,0\n"
    )
    err = error_of(folder(tmp_path, visit_occurrence_csv=text))
    assert err.column == "admitted_from_concept_id" and "twice" in err.message


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({}, "no OMOP CDM table files"),
        ({"person_csv": ""}, "empty"),
        ({"person_csv": PERSON + "1,8507,1950,a,extra\n"}, "cannot parse CSV"),
        ({"person_csv": PERSON + '1,8507,1950,"open\n'}, "cannot parse CSV"),
    ],
)
def test_unreadable_folders_and_files(tmp_path: Path, files: dict[str, str], fragment: str) -> None:
    assert fragment in error_of(folder(tmp_path, **files)).message


def test_two_files_for_one_table(tmp_path: Path) -> None:
    src = folder(tmp_path, person_csv=PERSON)
    with gzip.open(src / "person.csv.gz", "wt") as fh:
        fh.write(PERSON)
    assert "two files for table person" in error_of(src).message


def test_progress_is_called_per_table(tmp_path: Path) -> None:
    src = folder(
        tmp_path,
        person_csv=PERSON + "1,8507,1950,a\n2,8507,1950,b\n",
        death_csv="person_id,death_date\n1,2020-01-01\n",
    )
    calls: list[tuple[str, int, int]] = []
    con = duckdb.connect()
    load_into(con, src, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls == [("person", 2, 2), ("death", 1, 1)]


def test_load_into_replaces_and_a_failure_rolls_back(tmp_path: Path) -> None:
    good = folder(tmp_path / "a", person_csv=PERSON + "1,8507,1950,a\n2,8507,1950,b\n")
    _, con = load(good)
    load_into(con, good)
    assert con.execute("SELECT count(*) FROM person").fetchone() == (2,)
    bad = folder(tmp_path / "b", person_csv=PERSON + "3,8507,1950,a\n3,8507,1950,b\n")
    with pytest.raises(IngestError):
        load_into(con, bad)
    assert con.execute("SELECT person_id FROM person ORDER BY 1").fetchall() == [(1,), (2,)]


# --- the store file: atomic replace -------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reingest_replaces_not_duplicates(tmp_path: Path) -> None:
    store = tmp_path / "node.duckdb"
    first = folder(
        tmp_path / "a", person_csv=PERSON + "1,8507,1950,a\n2,8507,1950,b\n3,8532,1950,c\n"
    )
    second = folder(tmp_path / "b", person_csv=PERSON + "7,8507,1950,x\n8,8532,1950,y\n")
    ingest_dir(store, first)
    ingest_dir(store, first)
    con = open_store(store)
    assert con.execute("SELECT count(*) FROM person").fetchone() == (3,)
    con.close()
    report = ingest_dir(store, second)
    assert report.store == str(store) and report.tables == {"person": 2}
    con = open_store(store)
    assert con.execute("SELECT person_id FROM person ORDER BY 1").fetchall() == [(7,), (8,)]
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "node.duckdb"]


def test_failed_reingest_leaves_the_store_byte_for_byte_intact(tmp_path: Path) -> None:
    store = tmp_path / "node.duckdb"
    ingest_dir(store, folder(tmp_path / "a", person_csv=PERSON + "1,8507,1950,a\n2,8507,1950,b\n"))
    before = digest(store)
    bad = folder(
        tmp_path / "b",
        person_csv=PERSON + "5,8507,1950,a\n",
        observation_period_csv=(
            "observation_period_id,person_id,observation_period_start_date,"
            "observation_period_end_date\n1,5,2020-01-01,not-a-date\n"
        ),
    )
    with pytest.raises(IngestError) as info:
        ingest_dir(store, bad)
    assert (info.value.row, info.value.column) == (1, "observation_period_end_date")
    assert digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "node.duckdb"]
    con = open_store(store)
    assert con.execute("SELECT person_id FROM person ORDER BY 1").fetchall() == [(1,), (2,)]
    con.close()


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        ingest_dir(tmp_path / "node.duckdb", tmp_path, fmt="fhir")
    assert info.value.field == "format"
    assert not (tmp_path / "node.duckdb").exists()


def test_table_ingest_adds_analysis_data_atomically(tmp_path: Path) -> None:
    from healthspace.cdm.ingest import ingest_table
    from healthspace.cdm.store import catalog, open_store, round_count

    store = tmp_path / "reg.duckdb"
    good = tmp_path / "t.csv"
    good.write_text("y,x\n1,0.5\n0,1.5\n1,2.5\n")
    report = ingest_table(store, good)
    assert report["rows"] == 3 and report["columns"] == ["y", "x"]
    con = open_store(store)
    try:
        assert con.execute("SELECT sum(y), sum(x) FROM analysis_data").fetchone() == (2, 4.5)
        assert catalog(con).tables == {"analysis_data": round_count(3)}
    finally:
        con.close()
    before = store.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x00\n\x00")
    with pytest.raises(InvalidInput) as info:
        ingest_table(store, bad)
    assert info.value.field == "file"
    assert store.read_bytes() == before
    with pytest.raises(InvalidInput) as info:
        ingest_table(store, tmp_path / "missing.csv")
    assert info.value.field == "file"
    assert duckdb.connect(str(store), read_only=True).execute(
        "SELECT count(*) FROM analysis_data").fetchone() == (3,)
