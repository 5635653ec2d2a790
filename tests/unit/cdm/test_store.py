"""The node store: schema creation, read-only opening, the published catalog, the state path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.schema import TABLES, column_names
from healthspace.cdm.store import (
    META_TABLE,
    StoreNotFound,
    catalog,
    create_schema,
    open_store,
    round_count,
    state_path,
)
from healthspace.core.errors import HealthspaceError, InvalidInput


def make_store(path: Path, persons: int = 3) -> Path:
    con = duckdb.connect(str(path))
    create_schema(con)
    con.execute(
        f"INSERT INTO person (person_id, year_of_birth) SELECT range, 1950 FROM range({persons})"
    )
    con.close()
    return path


def test_create_schema_creates_every_table_and_is_idempotent() -> None:
    con = duckdb.connect()
    create_schema(con)
    create_schema(con)
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert tables == set(TABLES) | {META_TABLE}
    for table in TABLES:
        cols = con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
        assert [c[0] for c in cols] == column_names(table)
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    meta = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [META_TABLE],
    ).fetchall()
    assert [c[0] for c in meta] == ["table_name", "rows", "source_file", "ingested_at", "report"]


def test_open_store_missing_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.duckdb"
    with pytest.raises(StoreNotFound) as info:
        open_store(missing)
    assert isinstance(info.value, HealthspaceError)
    assert str(missing) in info.value.message
    assert not missing.exists()


def test_open_store_rejects_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"this is not duckdb" * 1000)
    with pytest.raises(InvalidInput) as info:
        open_store(junk)
    assert str(junk) in info.value.message


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    con = open_store(make_store(tmp_path / "node.duckdb"))
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO person (person_id, year_of_birth) VALUES (99, 1999)")
    assert con.execute("SELECT count(*) FROM person").fetchone() == (3,)
    con.close()


def test_several_readers_at_once(tmp_path: Path) -> None:
    store = make_store(tmp_path / "node.duckdb", persons=5)
    first, second = open_store(store), open_store(store)
    assert first.execute("SELECT count(*) FROM person").fetchone() == (5,)
    assert second.execute("SELECT count(*) FROM person").fetchone() == (5,)
    # Another process reads while this one still holds its read-only connections.
    code = (
        "import sys\nfrom healthspace.cdm.store import open_store\n"
        "con = open_store(sys.argv[1])\n"
        "print(con.execute('SELECT count(*) FROM person').fetchone()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"
    first.close()
    second.close()


@pytest.mark.parametrize(
    ("n", "rounded"),
    [(0, 0), (1, 100), (49, 100), (149, 100), (150, 200), (249, 200), (250, 300), (2694, 2700)],
)
def test_round_count(n: int, rounded: int) -> None:
    assert round_count(n) == rounded


def test_catalog_rounds_counts_and_omits_empty_tables() -> None:
    con = duckdb.connect()
    create_schema(con)
    con.execute("INSERT INTO person (person_id, year_of_birth) SELECT range, 1950 FROM range(149)")
    con.execute(
        "INSERT INTO observation_period (observation_period_id, person_id, "
        "observation_period_start_date, observation_period_end_date) "
        "SELECT range, range, DATE '2000-01-01', DATE '2001-01-01' FROM range(5350)"
    )
    con.execute("INSERT INTO death (person_id, death_date) VALUES (1, DATE '2020-01-01')")
    cat = catalog(con)
    assert cat.tables == {"person": 100, "observation_period": 5400, "death": 100}
    assert cat.cdm_version == "5.4"
    assert cat.vocabularies == {}


def test_catalog_lists_only_referenced_concept_codes() -> None:
    con = duckdb.connect()
    create_schema(con)
    con.execute(
        "INSERT INTO concept (concept_id, vocabulary_id, concept_code) VALUES "
        "(8507, 'Gender', 'M'), (8532, 'Gender', 'F'), (192671, 'SNOMED', '74474003'), "
        "(35208414, 'ICD10CM', 'K92.2'), (1118084, 'RxNorm', '140587'), (9201, 'Visit', 'IP')"
    )
    con.execute(
        "INSERT INTO person (person_id, gender_concept_id, year_of_birth) VALUES (1, 8507, 1950)"
    )
    con.execute(
        "INSERT INTO condition_occurrence (condition_occurrence_id, person_id, "
        "condition_concept_id, condition_start_date, condition_source_concept_id) "
        "VALUES (1, 1, 192671, DATE '2020-01-01', 35208414), (2, 1, 999, DATE '2020-01-01', NULL)"
    )
    cat = catalog(con)
    assert cat.vocabularies == {"Gender": ["M"], "ICD10CM": ["K92.2"], "SNOMED": ["74474003"]}
    assert cat.tables == {"concept": 100, "person": 100, "condition_occurrence": 100}


def test_state_path_sits_beside_the_store() -> None:
    assert state_path(Path("/srv/node/site.duckdb")) == Path("/srv/node/site.state.sqlite")
    assert state_path("store") == Path("store.state.sqlite")
