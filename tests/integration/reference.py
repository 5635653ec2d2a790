"""Independent reference counts: hand-written DuckDB SQL over the raw CSV files of a site."""

from __future__ import annotations

from pathlib import Path

import duckdb


def _csv(site: Path, table: str) -> str:
    return f"read_csv_auto('{(site / f'{table}.csv').as_posix()}')"


def t2d_feasibility(site: Path) -> int:
    """First E11 diagnosis, age 40-75, HbA1c > 7 and metformin within 365 days before."""
    sql = f"""
    WITH c AS (SELECT concept_id, vocabulary_id, concept_code FROM {_csv(site, 'concept')}),
    first_dx AS (
      SELECT o.person_id, min(o.condition_start_date) AS d
      FROM {_csv(site, 'condition_occurrence')} o JOIN c
        ON c.concept_id = o.condition_concept_id OR c.concept_id = o.condition_source_concept_id
      WHERE c.vocabulary_id = 'ICD10' AND starts_with(c.concept_code, 'E11')
      GROUP BY o.person_id)
    SELECT count(DISTINCT f.person_id)
    FROM first_dx f JOIN {_csv(site, 'person')} p ON p.person_id = f.person_id
    JOIN {_csv(site, 'measurement')} m ON m.person_id = f.person_id
    JOIN c mc ON mc.concept_id IN (m.measurement_concept_id, m.measurement_source_concept_id)
    JOIN {_csv(site, 'drug_exposure')} x ON x.person_id = f.person_id
    JOIN c xc ON xc.concept_id IN (x.drug_concept_id, x.drug_source_concept_id)
    WHERE year(f.d) - p.year_of_birth >= 40 AND year(f.d) - p.year_of_birth <= 75
      AND mc.vocabulary_id = 'LOINC' AND mc.concept_code = '4548-4'
      AND m.value_as_number > 7 AND date_diff('day', m.measurement_date, f.d) BETWEEN 0 AND 365
      AND xc.vocabulary_id = 'ATC' AND xc.concept_code = 'A10BA02'
      AND date_diff('day', x.drug_exposure_start_date, f.d) BETWEEN 0 AND 365
    """
    return int(duckdb.connect().execute(sql).fetchone()[0])


def persons_with_concept(site: Path, concept_id: int) -> int:
    """Persons (present in person) with a condition of ``concept_id`` or a descendant."""
    sql = f"""
    WITH d AS (
      SELECT descendant_concept_id AS id FROM {_csv(site, 'concept_ancestor')}
      WHERE ancestor_concept_id = {concept_id} UNION SELECT {concept_id})
    SELECT count(DISTINCT o.person_id)
    FROM {_csv(site, 'condition_occurrence')} o
    WHERE (o.condition_concept_id IN (SELECT id FROM d)
           OR o.condition_source_concept_id IN (SELECT id FROM d))
      AND o.person_id IN (SELECT person_id FROM {_csv(site, 'person')})
    """
    return int(duckdb.connect().execute(sql).fetchone()[0])


def released(n: int, k: int = 10) -> int | str:
    return n if n >= k else f"<{k}"
