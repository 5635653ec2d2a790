"""The full path source → CDM: a synthetic hospital's HIS export, mapped back, equals the
generator's own OMOP tables and answers every cohort the same."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.ingest_formats import ingest_mapped
from healthspace.cdm.synth_his import CANCELLED_EVERY, write_emr_export, write_his_export
from healthspace.demo_data import showcase_cohort
from healthspace.sim import simulate_dirs

EXAMPLES = resources.files("healthspace.examples")
MAPPING = Path(str(EXAMPLES.joinpath("his_mapping.yaml")))
EMR_MAPPING = Path(str(EXAMPLES.joinpath("emr_mapping.yaml")))
COHORTS = [
    showcase_cohort(),
    {"entry": {"condition": {"codes": ["ICD10:I10%"]}}, "inclusion": [{"age": {"min": 50}},
                                                                       {"sex": "F"}]},
    {"entry": {"drug": {"codes": ["ATC:A10BA02"]}}},
]


@pytest.fixture(scope="module")
def stores(synth_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("his_path")
    site = synth_dir / "hospital_1"
    rows = write_his_export(site, root / "export")
    ingest_dir(root / "omop.duckdb", site)
    report, _ = ingest_mapped(root / "his.duckdb", root / "export", MAPPING)
    write_emr_export(site, root / "emr")
    emr, _ = ingest_mapped(root / "emr.duckdb", root / "emr", EMR_MAPPING)
    return {"site": site, "rows": rows, "report": report, "omop": root / "omop.duckdb",
            "his": root / "his.duckdb", "export": root / "export", "emr": root / "emr.duckdb",
            "emr_report": emr}


def truth(site: Path, table: str) -> int:
    return int(duckdb.connect().execute(
        f"SELECT count(*) FROM read_csv_auto('{(site / f'{table}.csv').as_posix()}')"
    ).fetchone()[0])


@pytest.mark.parametrize("layout", ["report", "emr_report"])
def test_both_layouts_give_the_generators_tables(stores, layout) -> None:
    site, tables = stores["site"], stores[layout].tables
    for table in ("person", "visit_occurrence", "condition_occurrence", "drug_exposure",
                  "measurement"):
        assert tables[table] == truth(site, table), table
    assert stores[layout].orphans == {}


def test_cancelled_visits_stay_out(stores) -> None:
    site = stores["site"]
    visits = truth(site, "visit_occurrence")
    cancelled = stores["rows"]["就诊记录.csv"] - visits
    assert 0 < cancelled <= visits // CANCELLED_EVERY + 1  # in the export, not in the CDM


def test_every_cohort_counts_the_same(stores) -> None:
    for cohort in COHORTS:
        omop = simulate_dirs("cohort_count", {"s": stores["omop"]}, cohort=cohort)["sites"]
        his = simulate_dirs("cohort_count", {"s": stores["his"]}, cohort=cohort)["sites"]
        emr = simulate_dirs("cohort_count", {"s": stores["emr"]}, cohort=cohort)["sites"]
        assert his == emr == omop and isinstance(omop["s"], int), cohort


def test_the_export_looks_like_a_vendors(stores) -> None:
    raw = (stores["export"] / "患者信息.csv").read_bytes()
    assert "患者编号".encode("gbk") in raw and "患者编号".encode() not in raw  # GBK, not UTF-8
    assert (stores["export"] / "dx_map.csv").read_text().startswith("local_code,icd10\nD0001,")
    con = duckdb.connect(str(stores["his"]), read_only=True)
    try:
        names = con.execute("SELECT count(*) FROM person WHERE person_source_value LIKE '患者%'"
                            ).fetchone()[0]
    finally:
        con.close()
    assert names == 0


def test_synth_cli_writes_his_exports(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "healthspace", "synth", "--out", str(tmp_path),
                           "--sites", "1", "--persons", "200", "--format", "his-export",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["his_export"]["hospital_1"]["患者信息.csv"] == 200
    assert (tmp_path / "his" / "hospital_1" / "诊断.csv").exists()
    assert doc["emr_export"]["hospital_1"]["PATIENTS.csv"] == 200
    assert (tmp_path / "emr" / "hospital_1" / "FORMULARY.csv").exists()
