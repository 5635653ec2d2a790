"""Clinical evidence for severity-raising diagnoses on claims: rule files and the two sides.

A claim coded with a secondary diagnosis that raises its DRG's severity (CKD stage 5, heart
failure, sepsis, ...) should be backed by the treating hospital's record. An evidence rule
names the claim codes it covers and the findings that support them, any one sufficing:

* a **condition** (ICD-10 patterns, as in grouping rules) recorded in the window;
* a **drug** (ATC patterns) started in the window;
* a **procedure** (ICD-10-PCS patterns) in the window;
* a **measurement** (LOINC code) with a value ``below`` and/or ``above`` a threshold.

The window is ``before`` days before admission up to the day before admission, plus the
stay itself (admission to discharge) when ``stay`` is true. Only the hospital's own record
counts: the claim's own coding is what is being checked.

The payer side picks the claims to check (:func:`claims_to_check`); the hospital side
answers each with :func:`check_claims` — ``supported``, ``unsupported`` or ``no_record``
(no visit of that person with those dates, or the person is outside the study's consent).

A claim the payer's screen flags as a split admission is checked for the pseudo-code
:data:`STAY`: ``supported`` when the hospital's record holds that stay (a readmission it
documented), ``no_record`` when it holds no such stay — a billed stay without a clinical
record.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from healthspace.core.errors import InvalidInput
from healthspace.payer.rules import CodeSet, _patterns, load_rule_file

SAMPLE = Path(__file__).parent / "rules" / "evidence_sample.yaml"
Answer = Literal["supported", "unsupported", "no_record"]
ANSWERS: tuple[str, ...] = ("supported", "unsupported", "no_record")
STAY = "stay"  # the pseudo-code asking whether the hospital's record holds the stay
STAY_TITLE = "Readmission recorded at the hospital"
_LOINC = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,19}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    before: int = Field(default=0, ge=0, le=3650, description="days before admission")
    stay: bool = Field(default=True, description="include the stay (admission to discharge)")


class Criterion(_Strict):
    """One kind of supporting finding; exactly one of condition, drug, procedure,
    measurement."""

    condition: list[str] | None = None
    drug: list[str] | None = None
    procedure: list[str] | None = None
    measurement: str | None = Field(default=None, description="a LOINC code")
    below: float | None = None
    above: float | None = None
    window: Window = Field(default_factory=Window)

    @field_validator("condition", "drug", "procedure")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("list at least one code")
            _patterns(value)
        return value

    @field_validator("measurement")
    @classmethod
    def _loinc(cls, value: str | None) -> str | None:
        if value is not None and not _LOINC.match(value):
            raise ValueError(f"{value!r} is not a LOINC code")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Criterion:
        kinds = [k for k in ("condition", "drug", "procedure", "measurement")
                 if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a criterion names exactly one of condition, drug, procedure, "
                             "measurement")
        if self.measurement is not None and self.below is None and self.above is None:
            raise ValueError("a measurement criterion needs below or above")
        if self.measurement is None and (self.below is not None or self.above is not None):
            raise ValueError("below/above apply to a measurement only")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("condition", "drug", "procedure", "measurement")
                    if getattr(self, k) is not None)


class EvidenceRule(_Strict):
    title: str = Field(min_length=1, max_length=200)
    codes: list[str] = Field(min_length=1, description="claim diagnosis codes it covers")
    any_of: list[Criterion] = Field(min_length=1)

    _check = field_validator("codes")(_patterns)


class EvidenceRules(_Strict):
    """One evidence rule file; ``official: false`` marks a sample."""

    name: str
    version: str
    official: bool = False
    rules: list[EvidenceRule] = Field(min_length=1, max_length=200)

    @cached_property
    def _sets(self) -> list[CodeSet]:
        return [CodeSet(rule.codes) for rule in self.rules]

    def rule_for(self, code: str | None) -> int | None:
        """Index of the first rule covering this claim code, else None."""
        return next((i for i, s in enumerate(self._sets) if s.matches(code)), None)


def load_evidence_rules(raw: Any = None) -> EvidenceRules:
    """An evidence rule file (path, YAML/JSON text or dict; default: the shipped sample);
    errors name the field under ``evidence_rules``."""
    return load_rule_file(raw, EvidenceRules, SAMPLE, "evidence_rules",
                          "an evidence rule file")


def claims_to_check(cases: pd.DataFrame, rules: EvidenceRules,
                    stays: set[int] | None = None) -> pd.DataFrame:
    """One row per (claim, covered secondary code): visit_id, person_id, hospital, admitted,
    discharged, code, rule (index; None for :data:`STAY`). ``cases`` are grouped or plain
    inpatient cases; claims in ``stays`` (e.g. flagged split admissions) are also asked
    whether the hospital recorded the stay."""
    rows: list[tuple[Any, ...]] = []
    for visit, person, hospital, admitted, discharged, secondary in zip(
            cases["visit_id"], cases["person_id"], cases["hospital"], cases["admitted"],
            cases["discharged"], cases["secondary"], strict=True):
        for code in secondary:
            rule = rules.rule_for(code)
            if rule is not None:
                rows.append((int(visit), int(person), str(hospital), admitted, discharged,
                             code, rule))
        if stays and int(visit) in stays:
            rows.append((int(visit), int(person), str(hospital), admitted, discharged, STAY,
                         None))
    return pd.DataFrame(rows, columns=["visit_id", "person_id", "hospital", "admitted",
                                       "discharged", "code", "rule"])


# --- the hospital side ----------------------------------------------------------------

_EVENTS = {
    "condition": ("condition_occurrence", "condition_start_date", "condition_source_value",
                  "NULL"),
    "drug": ("drug_exposure", "drug_exposure_start_date", "drug_source_value", "NULL"),
    "procedure": ("procedure_occurrence", "procedure_date", "procedure_source_value", "NULL"),
    "measurement": ("measurement", "measurement_date", "measurement_source_value",
                    "value_as_number"),
}


def _day(value: Any, field: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{value!r} is not an ISO date", field=field) from None


def _holds(criterion: Criterion, events: pd.DataFrame, admitted: date,
           discharged: date) -> bool:
    if events.empty:
        return False
    first = admitted - timedelta(days=criterion.window.before)
    last = discharged if criterion.window.stay else admitted - timedelta(days=1)
    inside = events[(events["day"] >= first) & (events["day"] <= last)]
    if criterion.measurement is not None:
        inside = inside[inside["code"] == criterion.measurement]
        values = pd.to_numeric(inside["value"], errors="coerce")
        keep = values.notna()
        if criterion.below is not None:
            keep &= values < criterion.below
        if criterion.above is not None:
            keep &= values > criterion.above
        return bool(keep.any())
    patterns = CodeSet(getattr(criterion, criterion.kind))
    return any(patterns.matches(code) for code in inside["code"])


def check_claims(con: Any, queries: list[dict[str, Any]], rules: EvidenceRules,
                 persons_sql: str = "SELECT person_id FROM person") -> tuple[
                     list[dict[str, Any]], int]:
    """Answer each query ``{q, psv, admitted, discharged, codes}`` from this store: per code
    ``supported`` / ``unsupported`` / ``no_record``. Returns the answers and how many of the
    store's visits matched (the records the check used)."""
    wanted = []
    for i, query in enumerate(queries):
        field = f"queries[{i}]"
        if not isinstance(query, dict) or not isinstance(query.get("psv"), str):
            raise InvalidInput("a query names psv, admitted, discharged and codes", field=field)
        codes = query.get("codes")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, str)
                                                               for c in codes):
            raise InvalidInput("a query lists the claim codes to check", field=f"{field}.codes")
        wanted.append((int(query.get("q", i)), query["psv"],
                       _day(query.get("admitted"), f"{field}.admitted"),
                       _day(query.get("discharged"), f"{field}.discharged"), codes))
    if not wanted:
        return [], 0
    con.execute("CREATE OR REPLACE TEMP TABLE _evidence_queries (q BIGINT, psv VARCHAR, "
                "admitted DATE, discharged DATE)")
    con.executemany("INSERT INTO _evidence_queries VALUES (?, ?, ?, ?)",
                    [(q, psv, a, d) for q, psv, a, d, _ in wanted])
    matched = con.execute(f"""
        SELECT e.q, min(v.person_id) AS person_id
        FROM _evidence_queries e
        JOIN person p ON p.person_source_value = e.psv
        JOIN visit_occurrence v ON v.person_id = p.person_id
             AND v.visit_start_date = e.admitted AND v.visit_end_date = e.discharged
        WHERE p.person_id IN ({persons_sql})
        GROUP BY e.q""").fetchall()
    person_of = {int(q): int(pid) for q, pid in matched}
    events = _events(con, sorted(set(person_of.values())), rules)
    answers = []
    for q, _, admitted, discharged, codes in wanted:
        person = person_of.get(q)
        mine = events.get(person, _EMPTY) if person is not None else _EMPTY
        per_code: dict[str, str] = {}
        for code in codes:
            rule = rules.rule_for(code)
            if person is None:
                per_code[code] = "no_record"
            elif code == STAY:
                per_code[code] = "supported"
            elif rule is None:
                raise InvalidInput(f"no evidence rule covers code {code!r}",
                                   field="params.evidence_rules")
            else:
                ok = any(_holds(c, mine[mine["kind"] == c.kind], admitted, discharged)
                         for c in rules.rules[rule].any_of)
                per_code[code] = "supported" if ok else "unsupported"
        answers.append({"q": q, "answers": per_code})
    con.execute("DROP TABLE IF EXISTS _evidence_queries")
    return answers, len(person_of)


_EMPTY = pd.DataFrame(columns=["person_id", "kind", "day", "code", "value"])


def _events(con: Any, persons: list[int], rules: EvidenceRules) -> dict[int, pd.DataFrame]:
    """The events of these persons that any rule could use, by person."""
    if not persons:
        return {}
    kinds = sorted({c.kind for rule in rules.rules for c in rule.any_of})
    con.execute("CREATE OR REPLACE TEMP TABLE _evidence_persons AS "
                "SELECT unnest(CAST(? AS BIGINT[])) AS person_id", [persons])
    parts = []
    for kind in kinds:
        table, day, code, value = _EVENTS[kind]
        parts.append(f"SELECT person_id, '{kind}' AS kind, {day} AS day, {code} AS code, "
                     f"CAST({value} AS DOUBLE) AS value FROM {table} "
                     f"WHERE person_id IN (SELECT person_id FROM _evidence_persons)")
    frame = con.execute(" UNION ALL ".join(parts)).df()
    con.execute("DROP TABLE IF EXISTS _evidence_persons")
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return {int(pid): group for pid, group in frame.groupby("person_id")}
