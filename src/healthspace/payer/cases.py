"""Inpatient cases from a CDM store: one row per inpatient visit, with its codes and cost.

A case is an inpatient visit (``visit_concept_id`` 9201) with its principal diagnosis
(``condition_status_source_value = 'principal'``, else the visit's first condition), its other
diagnoses, its procedures (ICD-10-PCS source codes), the charge in ``cost`` and the length of
stay in days. Hospitals and the payer site hold the same tables, so grouping runs on either.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from healthspace.payer.grouper import Case, group
from healthspace.payer.rules import GroupingRules

INPATIENT = 9201

_CASES = f"""
WITH ip AS (
  SELECT v.visit_occurrence_id AS visit_id, v.person_id, v.visit_start_date AS admitted,
         v.visit_end_date AS discharged,
         coalesce(cs.care_site_source_value, CAST(v.care_site_id AS VARCHAR)) AS hospital
  FROM visit_occurrence v LEFT JOIN care_site cs ON cs.care_site_id = v.care_site_id
  WHERE v.visit_concept_id = {INPATIENT} AND v.person_id IN ({{persons}})),
dx AS (
  SELECT c.visit_occurrence_id AS visit_id,
         arg_min(c.condition_source_value, c.condition_occurrence_id)
           FILTER (WHERE c.condition_status_source_value = 'principal') AS flagged,
         arg_min(c.condition_source_value, c.condition_occurrence_id) AS first_code,
         list(c.condition_source_value ORDER BY c.condition_occurrence_id) AS codes
  FROM condition_occurrence c
  WHERE c.visit_occurrence_id IN (SELECT visit_id FROM ip)
  GROUP BY 1),
px AS (
  SELECT p.visit_occurrence_id AS visit_id,
         list(DISTINCT p.procedure_source_value ORDER BY p.procedure_source_value) AS procedures
  FROM procedure_occurrence p
  WHERE p.visit_occurrence_id IN (SELECT visit_id FROM ip)
  GROUP BY 1),
charge AS (
  SELECT k.cost_event_id AS visit_id, sum(coalesce(k.total_charge, k.total_paid)) AS cost
  FROM cost k
  WHERE k.cost_domain_id = 'Visit' AND k.cost_event_id IN (SELECT visit_id FROM ip)
  GROUP BY 1)
SELECT ip.visit_id, ip.person_id, ip.admitted, ip.discharged, ip.hospital,
       coalesce(dx.flagged, dx.first_code) AS principal, dx.codes, px.procedures,
       charge.cost, greatest(date_diff('day', ip.admitted, ip.discharged), 0) AS los
FROM ip LEFT JOIN dx USING (visit_id) LEFT JOIN px USING (visit_id)
     LEFT JOIN charge USING (visit_id)
ORDER BY ip.visit_id
"""


COLUMNS = ["visit_id", "person_id", "admitted", "discharged", "hospital", "principal",
           "secondary", "procedures", "cost", "los"]


def inpatient_cases(con: Any, persons_sql: str = "SELECT person_id FROM person") -> pd.DataFrame:
    """The store's inpatient cases (restricted to ``persons_sql``, e.g. consented persons)."""
    rows = []
    for visit, person, admitted, discharged, hospital, principal, codes, procedures, cost, \
            los in con.execute(_CASES.format(persons=persons_sql)).fetchall():
        others = list(codes or [])
        if principal in others:
            others.remove(principal)  # its first occurrence only
        rows.append((visit, person, admitted, discharged, hospital, principal,
                     tuple(dict.fromkeys(c for c in others if c)), tuple(procedures or ()),
                     None if cost is None else float(cost), int(los)))
    return pd.DataFrame(rows, columns=COLUMNS)


def grouped_cases(con: Any, rules: GroupingRules,
                  persons_sql: str = "SELECT person_id FROM person") -> pd.DataFrame:
    """Inpatient cases with their MDC, ADRG, DRG, severity and DIP group."""
    frame = inpatient_cases(con, persons_sql)
    groups = [group(rules, Case(p, s, x))
              for p, s, x in zip(frame["principal"], frame["secondary"], frame["procedures"],
                                 strict=True)]
    for name in ("mdc", "adrg", "drg", "severity", "dip"):
        frame[name] = [getattr(g, name) for g in groups]
    return frame
