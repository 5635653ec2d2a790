"""Nodes on the data holder's PostgreSQL, read in place: the same cohorts, models, survival
curves, records-scanned and catalogue as the DuckDB store the data came from.

The data holder's database is simulated by copying a DuckDB store into a schema of a
throw-away PostgreSQL cluster (tests/pgcluster.py); the node then reads that schema through
:mod:`healthspace.cdm.engines`. Spark is covered in test_engines_spark.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import sqlglot
from sqlglot import exp
from tests.pgcluster import Cluster

from healthspace.analyses.execute import run_local
from healthspace.cdm.engines import StoreSpec, open_engine
from healthspace.cdm.engines.export import copy_to_postgres
from healthspace.cdm.engines.postgres import PostgresConnection, libpq_url
from healthspace.cdm.engines.sql import UnsupportedStatement, translate
from healthspace.cdm.store import catalog, open_store
from healthspace.core.encoding import decode_array
from healthspace.core.errors import HealthspaceError, InvalidInput
from healthspace.governance.consent import ConsentRecord
from healthspace.sim import Site, simulate

TOL = 1e-8

# --- studies compared across engines -------------------------------------------------------

STARTERS = {"entry": {"drug": {"codes": ["ATC:A10BB09", "ATC:A10BA02"]}},
            "inclusion": [{"age": {"min": 18}},
                          {"observation_period": {"min_prior_observation_days": 0}}]}
HF_DATASET = {
    "covariates": [
        {"name": "age", "type": "age"}, {"name": "male", "type": "sex"},
        {"name": "hypertension", "type": "condition", "codes": ["ICD10:I10"],
         "window": {"start": None, "end": 0}},
        {"name": "ckd", "type": "condition", "codes": ["ICD10:N18%"],
         "window": {"start": None, "end": 0}},
        {"name": "hba1c", "type": "measurement", "codes": ["LOINC:4548-4"],
         "window": {"start": -365, "end": 0}},
    ],
    "exposure": {"name": "drug", "window": {"start": 0, "end": 0}, "groups": [
        {"value": "gliclazide", "drug": {"codes": ["ATC:A10BB09"]}},
        {"value": "metformin", "drug": {"codes": ["ATC:A10BA02"]}}]},
    "outcome": {"type": "time_to_event", "condition": {"codes": ["ICD10:I50%"]},
                "window": {"start": 1, "end": 1825}, "exclude_prior": True,
                "duration": "time", "event": "event"},
}
HF_STUDIES: dict[str, dict[str, Any]] = {
    "cohort_count": {"cohort": STARTERS},
    "glm": {"cohort": STARTERS, "dataset": HF_DATASET, "params": {
        "formula": "event ~ C(drug, Treatment('metformin')) + age + male + hypertension + ckd",
        "family": "binomial"}},
    "km": {"cohort": STARTERS, "dataset": HF_DATASET,
           "params": {"duration": "time", "event": "event", "group": "drug"}},
    "cox": {"cohort": STARTERS, "dataset": HF_DATASET,
            "params": {"duration": "time", "event": "event", "covariates": ["age", "male"]}},
    "summary": {"cohort": STARTERS, "dataset": HF_DATASET,
                "params": {"variables": ["age", "hba1c", "drug"],
                           "crosstabs": [["drug", "event"]]}},
}

# Eunomia GiBleed: celecoxib vs diclofenac new users and gastrointestinal haemorrhage.
NSAIDS = {"entry": {"drug": {"concepts": [1118084, 1124300]}}}
GI_BLEED = {"entry": {"condition": {"concepts": [192671]}}}
NSAID_DATASET = {
    "covariates": [{"name": "age", "type": "age"}, {"name": "male", "type": "sex"}],
    "exposure": {"name": "drug", "window": {"start": 0, "end": 0}, "groups": [
        {"value": "celecoxib", "drug": {"concepts": [1118084]}},
        {"value": "diclofenac", "drug": {"concepts": [1124300]}}]},
    "outcome": {"type": "time_to_event", "condition": {"concepts": [192671]},
                "window": {"start": 1, "end": None}, "duration": "time", "event": "event"},
}
EUNOMIA_STUDIES: dict[str, dict[str, Any]] = {
    "cohort_count": {"cohort": GI_BLEED},
    "glm": {"cohort": NSAIDS, "dataset": NSAID_DATASET, "params": {
        "formula": "event ~ C(drug, Treatment('diclofenac')) + age + male",
        "family": "binomial"}},
    "km": {"cohort": NSAIDS, "dataset": NSAID_DATASET,
           "params": {"duration": "time", "event": "event", "group": "drug"}},
}


# --- comparison ---------------------------------------------------------------------------

def assert_same(ours: Any, reference: Any, path: str = "") -> None:
    """Equal structure; counts and labels exactly, floats (and encoded arrays) to 1e-8."""
    if isinstance(reference, dict) and {"dtype", "shape", "data"} <= reference.keys():
        a, b = decode_array(ours), decode_array(reference)
        assert a.shape == b.shape, path
        assert all(math.isclose(x, y, rel_tol=TOL, abs_tol=TOL) or (x != x and y != y)
                   for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)), path
    elif isinstance(reference, dict):
        assert isinstance(ours, dict) and ours.keys() == reference.keys(), path
        for key in reference:
            assert_same(ours[key], reference[key], f"{path}.{key}")
    elif isinstance(reference, list | tuple):
        assert isinstance(ours, list | tuple) and len(ours) == len(reference), path
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(reference, float) and not isinstance(reference, bool):
        assert isinstance(ours, float | int), path
        assert math.isclose(ours, reference, rel_tol=TOL, abs_tol=TOL) or (
            math.isnan(ours) and math.isnan(reference)), (path, ours, reference)
    else:
        assert ours == reference, (path, ours, reference)


def run_study(con: Any, analysis: str, study: dict[str, Any],
              consent: list[ConsentRecord] | None = None) -> dict[str, Any]:
    """The study's final result with this connection as the only site (every round)."""
    site = Site(con, consent=consent or [])
    return simulate(analysis, {"site": site}, params=study.get("params"),
                    cohort=study.get("cohort"), dataset=study.get("dataset"), min_cell_size=5)


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    yield pg
    pg.stop()


def _load(cluster: Cluster, store: Path, schema: str) -> str:
    """A database holding ``store`` in ``schema``, as a data holder's own CDM would."""
    url = cluster.database("cdm")
    con = open_store(store)
    try:
        copy_to_postgres(con, url, schema)
    finally:
        con.close()
    return url


@pytest.fixture(scope="module")
def synth_pg(cluster: Cluster, synth_store: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection,
                                                                     PostgresConnection, str]]:
    url = _load(cluster, synth_store, "cdm")
    duck = open_store(synth_store)
    pg = open_engine(StoreSpec(engine="postgresql", url=url, schema="cdm"))
    yield duck, pg, url
    pg.close()
    duck.close()


# --- store spec ---------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "field"), [
    (StoreSpec(), "path"),
    (StoreSpec(engine="oracle"), "engine"),  # type: ignore[arg-type]
    (StoreSpec(path=Path("x.duckdb"), url="postgresql://h/db"), "url"),
    (StoreSpec(engine="postgresql"), "url"),
    (StoreSpec(engine="postgresql", url="mysql://h/db"), "url"),
    (StoreSpec(engine="postgresql", url="postgresql://h/db", schema="cdm; DROP"), "schema"),
    (StoreSpec(engine="postgresql", url="postgresql://h/db", path=Path("x")), "path"),
    (StoreSpec(engine="spark"), "parquet"),
    (StoreSpec(engine="spark", url="http://x", schema="cdm"), "url"),
    (StoreSpec(engine="spark", parquet=Path("/nonexistent/cdm")), "parquet"),
    (StoreSpec(engine="spark", schema="cdm", parquet=Path("/tmp")), "parquet"),
])
def test_an_incomplete_store_spec_names_the_field(spec: StoreSpec, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        spec.validate()
    assert caught.value.field == field


def test_the_spec_label_never_shows_a_password() -> None:
    spec = StoreSpec(engine="postgresql", url="postgresql://node:s3cret@db:5432/cdm",
                     schema="cdm")
    assert "s3cret" not in spec.validate().label
    assert spec.label == "postgresql:postgresql://node:***@db:5432/cdm/cdm"


# --- translation (pure) -------------------------------------------------------------------

def test_placeholders_bind_by_position_whatever_the_text_holds() -> None:
    sql = "SELECT '?' AS q, a FROM t WHERE a = ? AND b LIKE 'x%' AND c = ? -- ?"
    pg = translate(sql, [1, "two"], "postgres")
    assert pg.kind == "query" and pg.params == [1, "two"]
    assert "$1" in pg.sql and "$2" in pg.sql and "'?'" in pg.sql
    spark = translate(sql, [1, "it's \\ 'quoted'"], "spark")
    assert spark.params == []
    literals = [lit.this for lit in sqlglot.parse_one(spark.sql, read="spark")
                .find_all(exp.Literal) if lit.is_string]
    assert "it's \\ 'quoted'" in literals  # the value round-trips through Spark's quoting
    with pytest.raises(UnsupportedStatement, match="2 placeholders"):
        translate(sql, [1], "postgres")


@pytest.mark.parametrize("sql", [
    "INSERT INTO person (person_id) VALUES (1)",
    "DELETE FROM person",
    "UPDATE person SET year_of_birth = 1900",
    "DROP TABLE person",
    "CREATE TABLE x AS SELECT 1",
    "ALTER TABLE person ADD COLUMN x INT",
    "COPY person TO '/tmp/x.csv'",
])
@pytest.mark.parametrize("dialect", ["postgres", "spark"])
def test_writes_to_the_cdm_are_refused(sql: str, dialect: str) -> None:
    with pytest.raises(UnsupportedStatement):
        translate(sql, [], dialect)


def test_temp_tables_map_to_each_engines_session_objects() -> None:
    create = translate("CREATE OR REPLACE TEMP TABLE analysis_data AS SELECT * FROM person "
                       "WHERE person_id > ?", [3], "postgres")
    assert (create.kind, create.table, create.replace) == ("create_temp", "analysis_data", True)
    assert create.sql.startswith("SELECT") and create.params == [3]
    drop = translate("DROP TABLE IF EXISTS temp.analysis_data", [], "postgres")
    assert (drop.kind, drop.table) == ("drop_temp", "analysis_data")
    read = translate('SELECT COUNT(*) FROM temp."analysis_data"', [], "spark")
    assert "temp" not in read.sql.lower()
    assert "pg_temp" in translate("SELECT * FROM temp.x", [], "postgres").sql


# --- PostgreSQL: same answers as DuckDB ------------------------------------------------------

@pytest.mark.parametrize("analysis", sorted(HF_STUDIES))
def test_postgres_node_gives_the_duckdb_answer(synth_pg, analysis: str) -> None:
    duck, pg, _ = synth_pg
    study = HF_STUDIES[analysis]
    reference = run_study(duck, analysis, study)
    assert_same(run_study(pg, analysis, study), reference)
    if analysis == "cohort_count":
        assert reference["total"] >= 100  # a real cohort, not an empty one


def test_consent_and_records_scanned_are_the_same_on_postgres(synth_pg) -> None:
    duck, pg, _ = synth_pg
    ids = [int(r[0]) for r in duck.execute(
        "SELECT person_id FROM person ORDER BY person_id LIMIT 400").fetchall()]
    withheld = [ConsentRecord(person_id=pid, tier="withheld") for pid in ids[::2]]
    withheld += [ConsentRecord(person_source_value=str(psv), tier="withheld")
                 for (psv,) in duck.execute("SELECT person_source_value FROM person "
                                            "ORDER BY person_id DESC LIMIT 50").fetchall()]
    full = run_study(duck, "cohort_count", HF_STUDIES["cohort_count"])
    reference = run_study(duck, "cohort_count", HF_STUDIES["cohort_count"], withheld)
    assert reference["total"] < full["total"]  # consent removed persons
    assert_same(run_study(pg, "cohort_count", HF_STUDIES["cohort_count"], withheld), reference)
    runs = [run_local(con, site="s", analysis="glm", params=HF_STUDIES["glm"]["params"],
                      cohort=STARTERS, dataset=HF_DATASET) for con in (duck, pg)]
    assert runs[0].records_scanned == runs[1].records_scanned > 0
    assert runs[0].records == runs[1].records > 0
    assert "analysis_data" not in pg.temp_tables()  # dropped after the task, as on DuckDB
    guarded: dict[str, list[int]] = {"duckdb": [], "postgresql": []}
    for name, con in (("duckdb", duck), ("postgresql", pg)):  # the differencing guard's read
        run_local(con, site="s", analysis="cohort_count", params={}, cohort=STARTERS,
                  release_guard=guarded[name].extend)
    assert sorted(guarded["postgresql"]) == sorted(guarded["duckdb"]) != []


def test_postgres_catalogue_equals_the_stores(synth_pg) -> None:
    duck, pg, _ = synth_pg
    assert catalog(pg) == catalog(duck)


def test_postgres_reads_run_in_read_only_transactions(synth_pg) -> None:
    duck, pg, url = synth_pg
    with psycopg.connect(libpq_url(url), autocommit=True) as owner:
        owner.execute("CREATE SEQUENCE IF NOT EXISTS cdm.s")
    with pytest.raises(HealthspaceError, match="read-only transaction"):
        pg.execute("SELECT nextval('cdm.s')")
    with pytest.raises(UnsupportedStatement):
        pg.execute("DELETE FROM person")
    row = pg.execute("SELECT count(*) FROM person").fetchone()
    assert row == duck.execute("SELECT count(*) FROM person").fetchone()


def test_a_missing_schema_is_refused_naming_the_field(synth_pg) -> None:
    _, _, url = synth_pg
    with pytest.raises(InvalidInput) as caught:
        open_engine(StoreSpec(engine="postgresql", url=url, schema="nowhere"))
    assert caught.value.field == "schema"
    bad = url.rsplit(":", 1)[0] + ":1/none"
    with pytest.raises(InvalidInput) as caught:
        open_engine(StoreSpec(engine="postgresql", url=bad, schema="cdm"))
    assert caught.value.field == "url"


@pytest.mark.parametrize("analysis", sorted(EUNOMIA_STUDIES))
def test_eunomia_in_postgres_gives_the_duckdb_answer(cluster, eunomia_store, analysis) -> None:
    url = _eunomia_url(cluster, eunomia_store)
    duck = open_store(eunomia_store)
    pg = open_engine(StoreSpec(engine="postgresql", url=url, schema="omop"))
    try:
        study = EUNOMIA_STUDIES[analysis]
        reference = run_study(duck, analysis, study)
        assert_same(run_study(pg, analysis, study), reference)
        if analysis == "cohort_count":
            assert reference["total"] == 479  # Eunomia's documented GI-bleeding persons
        if analysis == "glm":
            assert reference["nobs"] > 1000  # the NSAID users, not an empty table
    finally:
        pg.close()
        duck.close()


_EUNOMIA_URL: dict[Path, str] = {}


def _eunomia_url(cluster: Cluster, store: Path) -> str:
    if store not in _EUNOMIA_URL:
        _EUNOMIA_URL[store] = _load(cluster, store, "omop")
    return _EUNOMIA_URL[store]


def test_a_lost_postgres_session_is_reported_broken(synth_pg) -> None:
    _, _, url = synth_pg
    pg = open_engine(StoreSpec(engine="postgresql", url=url, schema="cdm"))
    try:
        pid = pg.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert not pg.broken
        with psycopg.connect(libpq_url(url), autocommit=True) as owner:
            owner.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(HealthspaceError, match="PostgreSQL"):
            pg.execute("SELECT count(*) FROM person")
        assert pg.broken  # the node agent opens a new session before its next task
    finally:
        pg.close()
