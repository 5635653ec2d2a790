"""Synthetic hospital exports: the synthetic hospitals re-written in two vendors' layouts.

``write_his_export(site_dir, out)`` turns one synthetic OMOP site into the tables a hospital
information system (HIS) exports — Chinese column names, a GBK-encoded patient file, local
diagnosis and lab code lists with their maps to ICD-10 and LOINC, compact dates, a few
cancelled visits — which ``healthspace/examples/his_mapping.yaml`` maps back to the CDM.
``write_emr_export`` writes a second layout, an EMR's: English upper-case columns, semicolon
delimiters, day-first and date-time formats, one-letter codes, diagnoses coded in ICD-10
directly and drugs in a local formulary mapped to ATC (``examples/emr_mapping.yaml``).
The OMOP site is the ground truth the mapped imports are tested against.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

CANCELLED_EVERY = 50  # every 50th visit also appears once more, cancelled (状态 作废)


def _csv(site: Path, table: str) -> str:
    return f"read_csv_auto('{(site / f'{table}.csv').as_posix()}', header = true)"


def write_his_export(site: Path, out: Path) -> dict[str, int]:
    """Write the HIS layout of one synthetic OMOP site to ``out``; returns rows per file."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP TABLE concept AS SELECT * FROM {_csv(site, 'concept')}")
        ids = f"{_csv(site, 'identity')}" if (site / "identity.csv").exists() else None
        national = (f"LEFT JOIN {ids} i ON i.person_id = p.person_id" if ids else "")
        queries = {
            "患者信息.csv": f"""
                SELECT 'P' || lpad(CAST(p.person_id AS VARCHAR), 10, '0') AS 患者编号,
                       '患者' || CAST(p.person_id AS VARCHAR) AS 姓名,
                       CASE p.gender_concept_id WHEN 8507 THEN '男' WHEN 8532 THEN '女'
                            ELSE '未知' END AS 性别,
                       strftime(make_date(p.year_of_birth, coalesce(p.month_of_birth, 1),
                                          coalesce(p.day_of_birth, 1)), '%Y-%m-%d') AS 出生日期,
                       {'i.national_id' if ids else 'NULL'} AS 身份证号,
                       '138' || lpad(CAST(p.person_id % 100000000 AS VARCHAR), 8, '0') AS 电话
                FROM {_csv(site, 'person')} p {national} ORDER BY p.person_id""",
            "就诊记录.csv": f"""
                WITH v AS (SELECT * FROM {_csv(site, 'visit_occurrence')})
                SELECT 'V' || CAST(visit_occurrence_id AS VARCHAR) AS 就诊号,
                       'P' || lpad(CAST(person_id AS VARCHAR), 10, '0') AS 患者编号,
                       CASE visit_concept_id WHEN 9201 THEN '住院' WHEN 9203 THEN '急诊'
                            ELSE '门诊' END AS 就诊类型,
                       strftime(visit_start_date, '%Y%m%d') AS 入院日期,
                       strftime(coalesce(visit_end_date, visit_start_date), '%Y%m%d') AS 出院日期,
                       '正常' AS 状态 FROM v
                UNION ALL
                SELECT 'X' || CAST(visit_occurrence_id AS VARCHAR), 'P' ||
                       lpad(CAST(person_id AS VARCHAR), 10, '0'), '门诊',
                       strftime(visit_start_date, '%Y%m%d'), strftime(visit_start_date, '%Y%m%d'),
                       '作废' FROM v WHERE visit_occurrence_id % {CANCELLED_EVERY} = 0""",
            "dx_map.csv": """
                SELECT 'D' || lpad(CAST(dense_rank() OVER (ORDER BY concept_code) AS VARCHAR),
                                   4, '0') AS local_code, concept_code AS icd10
                FROM concept WHERE vocabulary_id = 'ICD10' ORDER BY 1""",
            "lab_map.csv": """
                SELECT 'LAB' || lpad(CAST(dense_rank() OVER (ORDER BY concept_code) AS VARCHAR),
                                     3, '0') AS local_code, concept_code AS loinc
                FROM concept WHERE vocabulary_id = 'LOINC' ORDER BY 1""",
        }
        for name in ("dx_map.csv", "lab_map.csv"):
            con.execute(f"CREATE TEMP TABLE \"{name[:-4]}\" AS {queries[name]}")
        queries["诊断.csv"] = f"""
            SELECT 'V' || CAST(c.visit_occurrence_id AS VARCHAR) AS 就诊号,
                   m.local_code AS 诊断编码, k.concept_name AS 诊断名称
            FROM {_csv(site, 'condition_occurrence')} c
            JOIN concept k ON k.concept_id = c.condition_concept_id
            JOIN dx_map m ON m.icd10 = k.concept_code ORDER BY c.condition_occurrence_id"""
        queries["检验.csv"] = f"""
            SELECT 'V' || CAST(x.visit_occurrence_id AS VARCHAR) AS 就诊号,
                   m.local_code AS 检验项目, x.value_as_number AS 结果,
                   x.unit_source_value AS 单位, strftime(x.measurement_date, '%Y/%m/%d') AS 报告日期
            FROM {_csv(site, 'measurement')} x
            JOIN concept k ON k.concept_id = x.measurement_concept_id
            JOIN lab_map m ON m.loinc = k.concept_code ORDER BY x.measurement_id"""
        queries["用药.csv"] = f"""
            SELECT 'V' || CAST(d.visit_occurrence_id AS VARCHAR) AS 就诊号,
                   k.concept_code AS 药品编码,
                   strftime(d.drug_exposure_start_date, '%Y%m%d') AS 开始日期
            FROM {_csv(site, 'drug_exposure')} d
            JOIN concept k ON k.concept_id = d.drug_concept_id ORDER BY d.drug_exposure_id"""
        rows: dict[str, int] = {}
        for name, sql in queries.items():
            target = out / name
            con.execute(f"COPY ({sql}) TO '{target.as_posix()}' (HEADER)")
            rows[name] = int(con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
    patients = out / "患者信息.csv"
    patients.write_bytes(patients.read_text(encoding="utf-8").encode("gbk"))  # the HIS's GBK
    return rows


def write_emr_export(site: Path, out: Path) -> dict[str, int]:
    """Write the EMR layout of one synthetic OMOP site to ``out``; returns rows per file."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP TABLE concept AS SELECT * FROM {_csv(site, 'concept')}")
        con.execute("""CREATE TEMP TABLE formulary AS SELECT 'F' || CAST(1000 + dense_rank()
            OVER (ORDER BY concept_code) AS VARCHAR) AS drug_code, concept_code AS atc
            FROM concept WHERE vocabulary_id = 'ATC'""")
        ids = _csv(site, "identity") if (site / "identity.csv").exists() else None
        queries = {
            "PATIENTS.csv": f"""
                SELECT 'MRN' || CAST(p.person_id AS VARCHAR) AS PAT_ID,
                       CASE p.gender_concept_id WHEN 8507 THEN 'M' WHEN 8532 THEN 'F'
                            ELSE 'U' END AS SEX,
                       strftime(make_date(p.year_of_birth, coalesce(p.month_of_birth, 1),
                                          coalesce(p.day_of_birth, 1)), '%d/%m/%Y') AS DOB,
                       {'i.national_id' if ids else 'NULL'} AS NATIONAL_ID
                FROM {_csv(site, 'person')} p
                {f'LEFT JOIN {ids} i ON i.person_id = p.person_id' if ids else ''}
                ORDER BY p.person_id""",
            "ENCOUNTERS.csv": f"""
                SELECT 'E' || CAST(visit_occurrence_id AS VARCHAR) AS ENC_ID,
                       'MRN' || CAST(person_id AS VARCHAR) AS PAT_ID,
                       CASE visit_concept_id WHEN 9201 THEN 'I' WHEN 9203 THEN 'E'
                            ELSE 'O' END AS ENC_TYPE,
                       strftime(visit_start_date, '%Y-%m-%d 08:00') AS ADMIT_DT,
                       strftime(coalesce(visit_end_date, visit_start_date), '%Y-%m-%d 17:30')
                           AS DISCH_DT
                FROM {_csv(site, 'visit_occurrence')}""",
            "DIAGNOSES.csv": f"""
                SELECT 'MRN' || CAST(c.person_id AS VARCHAR) AS PAT_ID,
                       'E' || CAST(c.visit_occurrence_id AS VARCHAR) AS ENC_ID,
                       strftime(c.condition_start_date, '%d/%m/%Y') AS DX_DATE,
                       k.concept_code AS ICD10
                FROM {_csv(site, 'condition_occurrence')} c
                JOIN concept k ON k.concept_id = c.condition_concept_id""",
            "LABS.csv": f"""
                SELECT 'MRN' || CAST(x.person_id AS VARCHAR) AS PAT_ID,
                       strftime(x.measurement_date, '%d/%m/%Y') AS RESULT_DATE,
                       k.concept_code AS LOINC, x.value_as_number AS RESULT_VALUE,
                       x.unit_source_value AS UNITS
                FROM {_csv(site, 'measurement')} x
                JOIN concept k ON k.concept_id = x.measurement_concept_id""",
            "MEDS.csv": f"""
                SELECT 'MRN' || CAST(d.person_id AS VARCHAR) AS PAT_ID,
                       f.drug_code AS DRUG_CODE,
                       strftime(d.drug_exposure_start_date, '%d/%m/%Y') AS START_DATE
                FROM {_csv(site, 'drug_exposure')} d
                JOIN concept k ON k.concept_id = d.drug_concept_id
                JOIN formulary f ON f.atc = k.concept_code""",
            "FORMULARY.csv": "SELECT drug_code, atc FROM formulary ORDER BY 1",
        }
        rows: dict[str, int] = {}
        for name, sql in queries.items():
            delimiter = "," if name == "FORMULARY.csv" else ";"
            con.execute(f"COPY ({sql}) TO '{(out / name).as_posix()}' "
                        f"(HEADER, DELIMITER '{delimiter}')")
            rows[name] = int(con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
    return rows
