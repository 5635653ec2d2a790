"""Mapped-CSV import: a vendor-style HIS export (Chinese column names, a GBK file, local code
lists) through the shipped example mapping, every mapping feature, and clear errors."""

from __future__ import annotations

import hmac
import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.deid import DeidConfig
from healthspace.cdm.fhir import concept_id
from healthspace.cdm.ingest_formats import ingest_mapped
from healthspace.cdm.mapped import id_sql
from healthspace.cohort.compiler import compile_cohort
from healthspace.cohort.models import load_cohort
from healthspace.core.errors import InvalidInput

KEY = b"a network key of the data space"
MAPPING = Path(str(resources.files("healthspace.examples").joinpath("his_mapping.yaml")))
FILES = {
    "患者信息.csv": "患者编号,姓名,性别,出生日期,身份证号,电话\n"
                "P0001,王芳,女,1960-04-02,11010519600402002X,13800000001\n"
                "P0002,李雷,男,1985-11-20,110105198511200031,13800000002\n"
                "P0003,赵敏,女,1990-01-15,,\n",
    "就诊记录.csv": "就诊号,患者编号,就诊类型,入院日期,出院日期,状态\n"
                "V1,P0001,住院,20230501,20230504,正常\n"
                "V2,P0001,门诊,20230610,20230610,正常\n"
                "V3,P0002,急诊,20230701,20230701,作废\n"  # cancelled: not a visit
                "V4,P0002,门诊,20230715,20230715,正常\n"
                "V5,P0003,门诊,20230801,20230801,正常\n",
    "诊断.csv": "就诊号,诊断编码,诊断名称\nV1,D001,2型糖尿病\nV4,D002,高血压\nV5,D001,2型糖尿病\n",
    "dx_map.csv": "local_code,icd10\nD001,E11.9\nD002,I10\n",
    "检验.csv": "就诊号,检验项目,结果,单位,报告日期\n"
              "V1,HBA1C,8.1,%,2023/05/02\nV5,HBA1C,6.2,%,2023/08/01\nV4,HBA1C,,%,2023/07/15\n",
    "lab_map.csv": "local_code,loinc\nHBA1C,4548-4\n",
    "用药.csv": "就诊号,药品编码,开始日期\nV1,A10BA02,20230301\nV4,C09AA05,20230715\n",
}


def export(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        encoding = "gbk" if name == "患者信息.csv" else "utf-8"  # the HIS writes GBK
        (folder / name).write_bytes(text.encode(encoding))
    return folder


def pid(key: str) -> int:
    return int(duckdb.connect().execute(f"SELECT {id_sql('k')} FROM (SELECT ? AS k)",
                                        [key]).fetchone()[0])


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("his")
    store = root / "his.duckdb"
    vault = root / "vault.csv"
    report, stats = ingest_mapped(store, export(root / "export"), MAPPING,
                                  deid=DeidConfig(network_key=KEY, vault_file=vault))
    return store, {"report": report, "stats": stats, "vault": vault}


def q(store: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_counts_equal_the_export(imported) -> None:
    store, info = imported
    assert info["report"].tables == {
        "person": 3, "observation_period": 4, "visit_occurrence": 4, "condition_occurrence": 3,
        "drug_exposure": 2, "measurement": 2, "concept": 5}
    assert info["stats"]["sources"] == {"patients": 3, "visits": 5, "diagnoses": 3, "labs": 3,
                                        "drugs": 2}
    assert info["stats"]["codes"] == {"ICD10": 2, "LOINC": 1, "ATC": 2}
    assert info["report"].orphans == {}


def test_values_dates_ids_and_joins(imported) -> None:
    store, _ = imported
    assert sorted(q(store, "SELECT person_id, gender_concept_id, year_of_birth, month_of_birth,"
                           " day_of_birth, gender_source_value FROM person")) == sorted([
        (pid("P0001"), 8532, 1960, 4, 2, "女"), (pid("P0002"), 8507, 1985, 11, 20, "男"),
        (pid("P0003"), 8532, 1990, 1, 15, "女")])
    visits = {r[0]: r[1:] for r in q(store, "SELECT visit_occurrence_id, visit_concept_id, "
                                            "CAST(visit_start_date AS VARCHAR) FROM "
                                            "visit_occurrence")}
    assert visits == {pid("V1"): (9201, "2023-05-01"), pid("V2"): (9202, "2023-06-10"),
                      pid("V4"): (9202, "2023-07-15"), pid("V5"): (9202, "2023-08-01")}
    # The diagnosis takes its person and date from the visit it was coded in (the join).
    assert sorted(q(store, "SELECT person_id, CAST(condition_start_date AS VARCHAR), "
                           "condition_concept_id, condition_source_value FROM "
                           "condition_occurrence")) == sorted([
        (pid("P0001"), "2023-05-01", concept_id("ICD10", "E11.9"), "D001"),
        (pid("P0002"), "2023-07-15", concept_id("ICD10", "I10"), "D002"),
        (pid("P0003"), "2023-08-01", concept_id("ICD10", "E11.9"), "D001")])
    assert sorted(q(store, "SELECT value_as_number, CAST(measurement_date AS VARCHAR) FROM "
                           "measurement")) == [(6.2, "2023-08-01"), (8.1, "2023-05-02")]


def test_identifiers_never_reach_the_store(imported) -> None:
    store, info = imported
    psv = dict(q(store, "SELECT person_id, person_source_value FROM person"))
    assert psv[pid("P0001")] == hmac.digest(KEY, b"11010519600402002X", "sha256").hex()
    assert psv[pid("P0003")] is None
    assert "11010519600402002X" in info["vault"].read_text()
    dump = json.dumps([q(store, f"SELECT * FROM {t}") for t in info["report"].tables],
                      default=str, ensure_ascii=False)
    for secret in ("王芳", "李雷", "13800000001", "11010519600402002X"):
        assert secret not in dump


def test_cohort_criteria_work_on_mapped_codes(imported) -> None:
    store, _ = imported
    cohort = load_cohort({"entry": {"condition": {"codes": ["ICD10:E11%"]}}, "inclusion": [
        {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 7}, "window": [0, 30]}}]})
    compiled = compile_cohort(cohort)
    assert q(store, f"SELECT person_id FROM ({compiled.sql})", list(compiled.params)) == [
        (pid("P0001"),)]


def mapping_with(tmp_path: Path, old: str, new: str) -> Path:
    text = MAPPING.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "m.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if needle in ln)


@pytest.mark.parametrize(("old", "new", "needle", "says"), [
    ("{column: 诊断编码}", "{column: 诊断代码}", "诊断代码", "source column '诊断代码'"),
    ('{column: 开始日期, date_format: "%Y%m%d"}', '{column: 开始日期, date_format: "%d.%m.%Y"}',
     "%d.%m.%Y", "does not match date_format"),
    ("{file: 用药.csv}", "{file: 处方.csv}", "处方.csv", "not found"),
    ("{constant: 32817}\n  observation_period", "{constant: 32817, colour: red}\n"
     "  observation_period", "colour", "Extra inputs"),
    ("visit_type_concept_id: {constant: 32817}", "visit_kind: {constant: 32817}", "visit_kind",
     "not a column of visit_occurrence"),
])
def test_errors_name_the_mapping_line_and_the_source_column(tmp_path, old, new, needle, says):
    path = mapping_with(tmp_path, old, new)
    store = tmp_path / "s.duckdb"
    with pytest.raises(InvalidInput) as info:
        ingest_mapped(store, export(tmp_path / "export"), path)
    message = str(info.value)
    assert says in message and f"line {line_of(path, needle)}" in message, message
    assert not store.exists()  # nothing was built


def test_cli_builds_the_store_and_fills_the_vault(tmp_path) -> None:
    src = export(tmp_path / "export")
    key = tmp_path / "net.key"
    key.write_bytes(KEY)
    store = tmp_path / "cli.duckdb"
    shutil.copy(MAPPING, tmp_path / "map.yaml")
    proc = subprocess.run([sys.executable, "-m", "healthspace", "node", "ingest", str(src),
                           "--store", str(store), "--format", "mapped-csv", "--mapping",
                           str(tmp_path / "map.yaml"), "--network-key-file", str(key), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["tables"]["person"] == 3 and doc["identity_vault_rows"] == 2
    assert doc["mapped"]["codes"] == {"ICD10": 2, "LOINC": 1, "ATC": 2}
    bad = subprocess.run([sys.executable, "-m", "healthspace", "node", "ingest", str(src),
                          "--store", str(store), "--format", "mapped-csv"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mapping" in bad.stderr
