"""The demo's data: the showcase cohort, the sites' policies and consent, the pooled check.

The pooled check is the showcase cohort written by hand in DuckDB SQL over the union of the
hospitals' CSV files — independent of the cohort compiler — minus the persons whose consent
does not permit the study's purpose, so it must equal the federated total.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

PURPOSE = "drug_development"
ALL_PURPOSES_BUT_INSURANCE = ["research", "public_health", "drug_development", "payer_policy"]

# Each hospital classifies its dataset differently, so the demo shows every approval mode.
# Each holder prices its data (CNY); public-health use is free and research at half price.
_RATES = {"public_health": 0.0, "research": 0.5}
_SLA = {"approval_hours": 48, "result_minutes": 30}
POLICIES: dict[str, dict[str, Any]] = {
    "hospital_1": {"level": "L3", "allowed_purposes": ALL_PURPOSES_BUT_INSURANCE,
                   "prices": {"per_study": 200, "per_person": 0.5, "per_compute_second": 2,
                              "purpose_rates": _RATES}, "sla": _SLA},
    "hospital_2": {"level": "L2", "allowed_purposes": ALL_PURPOSES_BUT_INSURANCE,
                   "prices": {"per_study": 150, "per_person": 0.4, "per_compute_second": 2,
                              "purpose_rates": _RATES}, "sla": _SLA},
    "hospital_3": {"level": "L1", "allowed_purposes": ALL_PURPOSES_BUT_INSURANCE,
                   "prices": {"per_study": 100, "per_person": 0.3, "purpose_rates": _RATES},
                   "sla": _SLA},
    "payer": {"level": "L3", "allowed_purposes": ["payer_policy", "public_health"],
              "prices": {"per_study": 300, "per_person": 0.2, "purpose_rates": _RATES}},
}
CONSUMER_DEPOSIT = 20_000.0  # the demo consumer's prepaid quota (CNY) and credit limit
CONSUMER_CREDIT = 5_000.0


def write_consent(site: Path, out: Path, *, withheld: float = 0.03,
                  research_only: float = 0.03) -> dict[str, int]:
    """A deterministic consent file for a site: a share of persons opt out or limit use."""
    con = duckdb.connect()
    try:
        people = [r[0] for r in con.execute(
            f"SELECT person_source_value FROM read_csv_auto('{(site / 'person.csv').as_posix()}')"
            " ORDER BY 1").fetchall()]
    finally:
        con.close()
    rows, counts = ["person_source_value,tier,purposes"], {"withheld": 0, "research_only": 0}
    for psv in people:
        u = int(hashlib.sha256(psv.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        tier = ("withheld" if u < withheld else
                "research_only" if u < withheld + research_only else None)
        if tier:
            rows.append(f"{psv},{tier},")
            counts[tier] += 1
    out.write_text("\n".join(rows) + "\n")
    return counts


def showcase_cohort() -> dict[str, Any]:
    """Type 2 diabetes, age 40-75, HbA1c > 7 % and metformin in the year before (JSON file)."""
    text = resources.files("healthspace.examples").joinpath("t2d_feasibility.json").read_text()
    return dict(json.loads(text))


# Independent of the cohort compiler: the showcase cohort written by hand over pooled CSVs.
POOLED_SQL = """
WITH
concept AS {concept},
person AS {person},
cond AS {condition},
meas AS {measurement},
drug AS {drug},
t2d AS (SELECT concept_id FROM concept WHERE vocabulary_id = 'ICD10' AND concept_code LIKE 'E11%'),
hba1c AS (SELECT concept_id FROM concept WHERE vocabulary_id = 'LOINC' AND concept_code = '4548-4'),
met AS (SELECT concept_id FROM concept WHERE vocabulary_id = 'ATC' AND concept_code = 'A10BA02'),
idx AS (
  SELECT site, person_id, min(condition_start_date) AS d FROM cond
  WHERE condition_concept_id IN (SELECT concept_id FROM t2d)
     OR condition_source_concept_id IN (SELECT concept_id FROM t2d)
  GROUP BY site, person_id)
SELECT count(*) FROM idx JOIN person p USING (site, person_id)
WHERE year(idx.d) - p.year_of_birth BETWEEN 40 AND 75
  AND EXISTS (SELECT 1 FROM meas m WHERE m.site = idx.site AND m.person_id = idx.person_id
      AND (m.measurement_concept_id IN (SELECT concept_id FROM hba1c)
           OR m.measurement_source_concept_id IN (SELECT concept_id FROM hba1c))
      AND m.value_as_number > 7.0
      AND m.measurement_date BETWEEN idx.d - INTERVAL 365 DAY AND idx.d)
  AND EXISTS (SELECT 1 FROM drug x WHERE x.site = idx.site AND x.person_id = idx.person_id
      AND (x.drug_concept_id IN (SELECT concept_id FROM met)
           OR x.drug_source_concept_id IN (SELECT concept_id FROM met))
      AND x.drug_exposure_start_date BETWEEN idx.d - INTERVAL 365 DAY AND idx.d)
"""


def pooled_showcase_count(site_dirs: list[Path], consent_files: list[Path] | None = None) -> int:
    """Count the showcase cohort over the union of all sites' CSV files with plain SQL,
    leaving out persons whose consent file entry does not permit drug development."""

    def source(table: str) -> str:
        paths = ", ".join(f"'{(d / f'{table}.csv').as_posix()}'" for d in site_dirs)
        # `filename` tags each row with its file; the site is that file's folder.
        return (f"(SELECT *, parse_dirpath(filename) AS site FROM read_csv_auto([{paths}], "
                "filename = true, union_by_name = true))")

    sql = POOLED_SQL.format(
        concept=source("concept"), person=source("person"),
        condition=source("condition_occurrence"), measurement=source("measurement"),
        drug=source("drug_exposure"),
    )
    if consent_files:
        paths = ", ".join(f"'{p.as_posix()}'" for p in consent_files)
        sql += (" AND p.person_source_value NOT IN (SELECT person_source_value FROM "
                f"read_csv_auto([{paths}], all_varchar = true) "
                "WHERE tier IN ('withheld', 'research_only'))")
    con = duckdb.connect()
    try:
        return int(con.execute(sql).fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
