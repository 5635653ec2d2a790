"""Data-quality report of a node store, in the spirit of OHDSI's Data Quality Dashboard.

Each check counts the rows (or persons) that violate it against a denominator and passes when
the violating share is at most its threshold; a check with nothing to look at is
``not_applicable``. Three categories, as in the Kahn framework DQD uses:

* **conformance** — required fields present, concept ids known to the store's vocabulary,
  dates in range, valid gender concepts;
* **completeness** — null rates of every field (figures), with thresholds on the fields
  analyses depend on;
* **plausibility** — ages 0–120, death after birth, no events before birth or long after
  death, visits within observation periods, measurement values within physiological ranges
  per LOINC code (``quality_ranges.csv``), no orphan rows.

The report stays on the node; only its summary (scores and rates, never rows) goes into the
catalogue the node publishes.
"""

from __future__ import annotations

import csv
import html
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Literal

import duckdb

from healthspace.cdm.schema import DOMAINS, PERSON_TABLES, TABLES
from healthspace.cdm.store import has_table
from healthspace.core.clock import iso, utcnow

Category = Literal["conformance", "completeness", "plausibility"]
Status = Literal["pass", "fail", "not_applicable"]
EARLIEST = "1900-01-01"
PUBLISHED_MIN_ROWS = 100
AFTER_DEATH_DAYS = 60  # records this long after death are implausible (late billing aside)


@dataclass
class Check:
    id: str
    category: Category
    table: str
    field: str | None
    description: str
    threshold: float  # the largest violating share that still passes (0.05 = 5 %)
    violations: int = 0
    denominator: int = 0
    status: Status = "not_applicable"

    @property
    def rate(self) -> float | None:
        return self.violations / self.denominator if self.denominator else None


@dataclass
class QualityReport:
    checked_at: str
    checks: list[Check]
    completeness: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        passed = sum(c.status == "pass" for c in self.checks)
        failed = sum(c.status == "fail" for c in self.checks)
        return {"checks": len(self.checks), "passed": passed, "failed": failed,
                "not_applicable": len(self.checks) - passed - failed,
                "score": round(passed / (passed + failed), 4) if passed + failed else None,
                "by_category": {cat: {"passed": sum(c.status == "pass" for c in self.checks
                                                    if c.category == cat),
                                      "failed": sum(c.status == "fail" for c in self.checks
                                                    if c.category == cat)}
                                for cat in ("conformance", "completeness", "plausibility")}}

    def to_dict(self) -> dict[str, Any]:
        return {"checked_at": self.checked_at, "summary": self.summary, "rows": self.rows,
                "checks": [{**asdict(c), "rate": c.rate} for c in self.checks],
                "completeness": self.completeness}

    def published(self) -> dict[str, Any]:
        """What the catalogue may carry: scores, and violation rates in percent rounded to 0.1
        over at least :data:`PUBLISHED_MIN_ROWS` rows (so no rate pins down a few records);
        never counts."""
        return {**self.summary, "checked_at": self.checked_at,
                "failed_checks": [c.id for c in self.checks if c.status == "fail"],
                "rates": {c.id: round(100 * c.rate, 1) for c in self.checks
                          if c.rate is not None and c.denominator >= PUBLISHED_MIN_ROWS}}


def load_ranges() -> dict[str, tuple[float, float, str]]:
    """LOINC code -> (low, high, unit): the physiological ranges shipped with the package."""
    text = resources.files("healthspace.cdm").joinpath("quality_ranges.csv").read_text("utf-8")
    return {r["loinc"]: (float(r["low"]), float(r["high"]), r["unit"])
            for r in csv.DictReader(line for line in text.splitlines()
                                    if not line.startswith("#"))}


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
           ) -> tuple[int, int]:
    row = con.execute(sql, params or []).fetchone()
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def _rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in TABLES if has_table(con, t)}


def _checks(con: duckdb.DuckDBPyConnection, rows: dict[str, int]) -> list[tuple[Check, str]]:
    """Every check with the SQL that yields (violations, denominator)."""
    out: list[tuple[Check, str]] = []
    vocab = rows.get("concept", 0) > 0
    for table, cols in TABLES.items():
        if not rows.get(table):
            continue
        required = [c.name for c in cols if c.required]
        nulls = " + ".join(f"count(*) FILTER (WHERE {c} IS NULL)" for c in required)
        out.append((Check(f"required_{table}", "conformance", table, None,
                          f"{table}: required fields ({', '.join(required)}) present", 0.0),
                    f"SELECT {nulls}, count(*) FROM {table}"))
    for domain, (table, concept_col, _src, date_col) in DOMAINS.items():
        if not rows.get(table):
            continue
        if vocab:
            out.append((Check(f"known_concepts_{domain}", "conformance", table, concept_col,
                              f"{concept_col} is 0 or a concept of the store's vocabulary",
                              0.05),
                        f"SELECT count(*) FILTER (WHERE x.{concept_col} <> 0 AND NOT EXISTS "
                        f"(SELECT 1 FROM concept c WHERE c.concept_id = x.{concept_col})), "
                        f"count(*) FROM {table} x"))
        out.append((Check(f"dates_in_range_{domain}", "conformance", table, date_col,
                          f"{date_col} between {EARLIEST} and today", 0.0),
                    f"SELECT count(*) FILTER (WHERE {date_col} < DATE '{EARLIEST}' "
                    f"OR {date_col} > current_date), count(*) FROM {table}"))
        out.append((Check(f"after_birth_{domain}", "plausibility", table, date_col,
                          f"{date_col} not before the person's year of birth", 0.01),
                    f"SELECT count(*) FILTER (WHERE year(x.{date_col}) < p.year_of_birth), "
                    f"count(*) FROM {table} x JOIN person p USING (person_id)"))
        if rows.get("death"):
            out.append((Check(f"before_death_{domain}", "plausibility", table, date_col,
                              f"{date_col} at most {AFTER_DEATH_DAYS} days after death", 0.01),
                        f"SELECT count(*) FILTER (WHERE x.{date_col} > d.death_date + "
                        f"INTERVAL {AFTER_DEATH_DAYS} DAY), count(*) FROM {table} x "
                        "JOIN death d USING (person_id)"))
    if rows.get("person"):
        out.append((Check("gender_valid", "conformance", "person", "gender_concept_id",
                          "gender_concept_id is female (8532), male (8507) or unknown (0)",
                          0.0),
                    "SELECT count(*) FILTER (WHERE gender_concept_id NOT IN (8507, 8532, 0)), "
                    "count(*) FROM person"))
        out.append((Check("gender_known", "completeness", "person", "gender_concept_id",
                          "gender recorded (not null or 0)", 0.05),
                    "SELECT count(*) FILTER (WHERE coalesce(gender_concept_id, 0) = 0), "
                    "count(*) FROM person"))
        last = ("(SELECT max(observation_period_end_date) FROM observation_period o "
                "WHERE o.person_id = p.person_id)") if rows.get("observation_period") else "NULL"
        out.append((Check("age_0_120", "plausibility", "person", "year_of_birth",
                          "age at the last observation (or today) between 0 and 120", 0.0),
                    "SELECT count(*) FILTER (WHERE year(coalesce(" + last + ", current_date))"
                    " - p.year_of_birth NOT BETWEEN 0 AND 120), count(*) FROM person p"))
    if rows.get("death"):
        out.append((Check("death_after_birth", "plausibility", "death", "death_date",
                          "death not before birth", 0.0),
                    "SELECT count(*) FILTER (WHERE year(d.death_date) < p.year_of_birth), "
                    "count(*) FROM death d JOIN person p USING (person_id)"))
    if rows.get("visit_occurrence") and rows.get("observation_period"):
        out.append((Check("visits_in_observation", "plausibility", "visit_occurrence",
                          "visit_start_date", "visits start within an observation period of "
                          "the person", 0.05),
                    "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM observation_period"
                    " o WHERE o.person_id = v.person_id AND v.visit_start_date BETWEEN "
                    "o.observation_period_start_date AND o.observation_period_end_date)), "
                    "count(*) FROM visit_occurrence v"))
    if rows.get("measurement"):
        out.append((Check("measurement_value_present", "completeness", "measurement",
                          "value_as_number", "measurements carry a numeric value", 0.5),
                    "SELECT count(*) FILTER (WHERE value_as_number IS NULL), count(*) "
                    "FROM measurement"))
        if vocab:
            out.append((Check("measurement_in_range", "plausibility", "measurement",
                              "value_as_number", "values within the physiological range of "
                              "their LOINC code (quality_ranges.csv)", 0.01),
                        "SELECT count(*) FILTER (WHERE m.value_as_number NOT BETWEEN r.low AND "
                        "r.high), count(*) FROM measurement m JOIN concept c ON c.concept_id = "
                        "m.measurement_concept_id JOIN _quality_ranges r ON r.loinc = "
                        "c.concept_code WHERE c.vocabulary_id = 'LOINC' AND "
                        "m.value_as_number IS NOT NULL"))
    for table in PERSON_TABLES:
        if rows.get(table):
            out.append((Check(f"orphans_{table}", "plausibility", table, "person_id",
                              f"{table} rows belong to a person in person", 0.0),
                        f"SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM person p "
                        f"WHERE p.person_id = x.person_id)), count(*) FROM {table} x"))
    return out


def _completeness(con: duckdb.DuckDBPyConnection, rows: dict[str, int]
                  ) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for table, cols in TABLES.items():
        n = rows.get(table, 0)
        if not n:
            continue
        nulls = ", ".join(f"count(*) FILTER (WHERE {c.name} IS NULL)" for c in cols)
        counts = con.execute(f"SELECT {nulls} FROM {table}").fetchone() or ()
        out[table] = {c.name: round(int(v) / n, 4) for c, v in zip(cols, counts, strict=True)}
    return out


def assess(con: duckdb.DuckDBPyConnection) -> QualityReport:
    """Run every check on an open store connection (read-only is enough)."""
    ranges = load_ranges()
    con.execute("CREATE OR REPLACE TEMP TABLE _quality_ranges (loinc VARCHAR, low DOUBLE, "
                "high DOUBLE)")
    con.executemany("INSERT INTO _quality_ranges VALUES (?, ?, ?)",
                    [(code, low, high) for code, (low, high, _) in ranges.items()])
    rows = _rows(con)
    checks = []
    for check, sql in _checks(con, rows):
        check.violations, check.denominator = _count(con, sql)
        if check.denominator:
            check.status = "pass" if check.violations <= check.threshold * check.denominator \
                else "fail"
        checks.append(check)
    con.execute("DROP TABLE IF EXISTS temp._quality_ranges")
    return QualityReport(checked_at=iso(utcnow()), checks=checks,
                         completeness=_completeness(con, rows), rows=rows)


def to_html(report: QualityReport, title: str) -> str:
    """A self-contained HTML page of the report."""
    s = report.summary
    rows = "\n".join(
        f"<tr class='{c.status}'><td>{html.escape(c.category)}</td><td>{html.escape(c.id)}</td>"
        f"<td>{html.escape(c.description)}</td><td>{c.violations:,} / {c.denominator:,}</td>"
        f"<td>{'' if c.rate is None else f'{100 * c.rate:.2f} %'}</td>"
        f"<td>{100 * c.threshold:g} %</td><td>{c.status}</td></tr>" for c in report.checks)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} tr.fail{{background:#fdd}}
tr.pass{{background:#efe}} tr.not_applicable{{color:#888}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Checked {html.escape(report.checked_at)}: {s['passed']} passed, {s['failed']} failed,
{s['not_applicable']} not applicable; score {s['score']}.</p>
<table><tr><th>category</th><th>check</th><th>what</th><th>violations</th><th>rate</th>
<th>threshold</th><th>status</th></tr>
{rows}
</table></body></html>
"""
