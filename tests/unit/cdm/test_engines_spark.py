"""Nodes on Spark SQL: the same cohorts, models and survival curves as the DuckDB store the
Parquet tables were written from, in one local Spark session (``local[2]``) for the module.

Spark starts a JVM and plans every query as jobs: these tests are slow by nature, and use
smaller analysis datasets than test_engines.py to stay within a minute or so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cdm.test_engines import (
    EUNOMIA_STUDIES,
    STARTERS,
    assert_same,
    run_study,
)

from healthspace.analyses.execute import run_local
from healthspace.cdm.engines import StoreSpec, open_engine
from healthspace.cdm.engines.export import export_parquet
from healthspace.cdm.engines.sql import UnsupportedStatement
from healthspace.cdm.store import catalog, open_store
from healthspace.core.errors import HealthspaceError, InvalidInput
from healthspace.governance.consent import ConsentRecord

pytestmark = pytest.mark.slow

SMALL_HF = {
    "covariates": [{"name": "age", "type": "age"}, {"name": "male", "type": "sex"}],
    "exposure": {"name": "drug", "window": {"start": 0, "end": 0}, "groups": [
        {"value": "gliclazide", "drug": {"codes": ["ATC:A10BB09"]}},
        {"value": "metformin", "drug": {"codes": ["ATC:A10BA02"]}}]},
    "outcome": {"type": "time_to_event", "condition": {"codes": ["ICD10:I50%"]},
                "window": {"start": 1, "end": 1825}, "duration": "time", "event": "event"},
}


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session for the module: two cores, few shuffle partitions, no UI."""
    import os
    import shutil

    from pyspark.sql import SparkSession

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        message = ("Spark tests need a Java runtime, 17 or newer (`make test` installs "
                   "Debian's default-jre-headless)")
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    warehouse = tmp_path_factory.mktemp("spark_warehouse")
    session = (SparkSession.builder.master("local[2]").appName("healthspace-tests")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.default.parallelism", "2")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.warehouse.dir", str(warehouse))
               .config("spark.driver.extraJavaOptions",
                       f"-Dderby.system.home={warehouse}")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _parquet(store: Path, folder: Path) -> Path:
    con = open_store(store)
    try:
        export_parquet(con, folder)
    finally:
        con.close()
    return folder


@pytest.fixture(scope="module")
def synth_spark(spark, synth_store: Path, tmp_path_factory) -> Iterator[tuple[Any, Any]]:
    folder = _parquet(synth_store, tmp_path_factory.mktemp("synth_parquet"))
    duck = open_store(synth_store)
    con = open_engine(StoreSpec(engine="spark", url="local[2]", parquet=folder))
    yield duck, con
    con.close()
    duck.close()


def test_spark_node_gives_the_duckdb_answers(synth_spark) -> None:
    duck, con = synth_spark
    withheld = [ConsentRecord(person_id=int(pid), tier="withheld") for (pid,) in duck.execute(
        "SELECT person_id FROM person ORDER BY person_id LIMIT 300").fetchall()]
    studies = {
        "cohort_count": {"cohort": STARTERS},
        "glm": {"cohort": STARTERS, "dataset": SMALL_HF, "params": {
            "formula": "event ~ C(drug, Treatment('metformin')) + age + male",
            "family": "binomial"}},
        "km": {"cohort": STARTERS, "dataset": SMALL_HF,
               "params": {"duration": "time", "event": "event", "group": "drug"}},
    }
    for analysis, study in studies.items():
        consent = withheld if analysis == "cohort_count" else None
        reference = run_study(duck, analysis, study, consent)
        assert_same(run_study(con, analysis, study, consent), reference)
    assert set(reference["groups"]) == {"gliclazide", "metformin"}  # km: real curves
    assert reference["sites"]["site"] > 100
    runs = [run_local(c, site="s", analysis="cohort_count", params={}, cohort=STARTERS)
            for c in (duck, con)]
    assert runs[0].records_scanned == runs[1].records_scanned > 0
    assert catalog(con) == catalog(duck)


def test_spark_refuses_writes_and_reports_engine_errors(synth_spark) -> None:
    _, con = synth_spark
    with pytest.raises(UnsupportedStatement):
        con.execute("DROP TABLE person")
    with pytest.raises(UnsupportedStatement):
        con.execute("INSERT INTO person (person_id) VALUES (1)")
    with pytest.raises(HealthspaceError, match="Spark"):
        con.execute("SELECT no_such_column FROM person")
    assert con.execute("SELECT count(*) FROM person").fetchone()[0] > 0  # still usable


def test_spark_reads_a_metastore_database(spark, synth_store, tmp_path) -> None:
    folder = _parquet(synth_store, tmp_path / "tables")
    spark.sql("CREATE DATABASE IF NOT EXISTS cdm")
    for table in ("person", "observation_period", "drug_exposure", "concept",
                  "concept_ancestor"):
        spark.sql(f"CREATE TABLE IF NOT EXISTS cdm.{table} USING parquet "
                  f"LOCATION '{folder / (table + '.parquet')}'")
    con = open_engine(StoreSpec(engine="spark", schema="cdm"))
    duck = open_store(synth_store)
    try:
        assert_same(run_study(con, "cohort_count", {"cohort": STARTERS}),
                    run_study(duck, "cohort_count", {"cohort": STARTERS}))
    finally:
        con.close()
        duck.close()
    with pytest.raises(InvalidInput) as caught:
        open_engine(StoreSpec(engine="spark", schema="nowhere"))
    assert caught.value.field == "schema"


def test_eunomia_in_spark_gives_the_duckdb_answers(spark, eunomia_store, tmp_path) -> None:
    folder = _parquet(eunomia_store, tmp_path / "eunomia")
    duck = open_store(eunomia_store)
    con = open_engine(StoreSpec(engine="spark", parquet=folder))
    try:
        for analysis, study in EUNOMIA_STUDIES.items():
            reference = run_study(duck, analysis, study)
            assert_same(run_study(con, analysis, study), reference)
            if analysis == "cohort_count":
                assert reference["total"] == 479
    finally:
        con.close()
        duck.close()
