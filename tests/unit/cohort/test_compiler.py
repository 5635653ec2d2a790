"""Cohort compiler: every criterion kind, operator and edge run against small DuckDB stores."""

from __future__ import annotations

import itertools
import re
from datetime import date, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlglot

from healthspace.cdm.schema import DOMAINS, GENDER_CONCEPTS, TABLES, ddl
from healthspace.cohort.compiler import compile_cohort
from healthspace.cohort.models import CohortDefinition, load_cohort

INDEX = date(2020, 6, 1)
F, M = GENDER_CONCEPTS["F"], GENDER_CONCEPTS["M"]

# concept_id, vocabulary_id, concept_code
VOCAB = [
    (101, "ICD10", "E11"),
    (102, "ICD10", "E11.9"),
    (103, "ICD10", "E1"),
    (104, "ICD10", "XE11"),
    (110, "ICD10", "I10"),
    (120, "ICD10", "C50.9"),
    (201, "ATC", "A10BA02"),
    (202, "ATC", "C10AA05"),
    (301, "LOINC", "4548-4"),
    (401, "CPT4", "99213"),
    (501, "Visit", "IP"),
    (601, "LOCAL", "A_1"),
    (602, "LOCAL", "AB1"),
    (603, "LOCAL", "A_22"),
]


class Store:
    """An in-memory CDM store with helpers to add hand-made rows."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        for table in TABLES:
            self.con.execute(ddl(table))
        self.con.executemany(
            "INSERT INTO concept (concept_id, vocabulary_id, concept_code) VALUES (?, ?, ?)", VOCAB
        )
        self._ids = itertools.count(1)

    def person(self, pid: int, yob: int = 1960, gender: int | None = F) -> Store:
        self.con.execute(
            "INSERT INTO person (person_id, year_of_birth, gender_concept_id) VALUES (?, ?, ?)",
            [pid, yob, gender],
        )
        return self

    def event(
        self,
        kind: str,
        pid: int,
        when: date | int,
        concept: int | None = None,
        source: int | None = None,
        value: float | None = None,
    ) -> Store:
        """Add one event; an int ``when`` is days relative to INDEX."""
        table, concept_col, source_col, date_col = DOMAINS[kind]
        day = INDEX + timedelta(days=when) if isinstance(when, int) else when
        cols = [f"{table}_id", "person_id", concept_col, source_col, date_col]
        vals: list[Any] = [next(self._ids), pid, concept, source, day]
        if kind == "measurement":
            cols.append("value_as_number")
            vals.append(value)
        marks = ", ".join("?" * len(cols))
        self.con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", vals)
        return self

    def observation(self, pid: int, start: int, end: int) -> Store:
        self.con.execute(
            "INSERT INTO observation_period VALUES (?, ?, ?, ?, NULL)",
            [next(self._ids), pid, INDEX + timedelta(days=start), INDEX + timedelta(days=end)],
        )
        return self

    def insert_frame(self, table: str, frame: pd.DataFrame) -> None:
        self.con.register("incoming", frame)
        self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        self.con.unregister("incoming")

    def ancestor(self, ancestor: int, descendant: int) -> Store:
        self.con.execute("INSERT INTO concept_ancestor VALUES (?, ?, 1, 1)", [ancestor, descendant])
        return self

    def cohort(self, definition: dict[str, Any] | CohortDefinition) -> dict[int, date]:
        query = compile_cohort(load_cohort(definition))
        assert query.sql.count("?") == len(query.params)
        return dict(self.con.execute(query.sql, query.params).fetchall())


T2D_ENTRY = {"condition": {"codes": ["ICD10:E11%"]}}


def with_entry(*pids: int, yob: int = 1960) -> Store:
    """A store where each pid has a person row and a T2D entry event at INDEX."""
    s = Store()
    for pid in pids:
        s.person(pid, yob=yob).event("condition", pid, 0, concept=101)
    return s


def cohort_of(store: Store, **parts: Any) -> set[int]:
    return set(store.cohort({"entry": T2D_ENTRY, **parts}))


# --- entry and index date --------------------------------------------------------------


def test_index_is_the_earliest_entry_event_and_windows_are_relative_to_it() -> None:
    s = Store().person(1).person(2).person(3)
    s.event("condition", 1, date(2020, 6, 1), concept=101)
    s.event("condition", 1, date(2019, 1, 1), source=102)
    s.event("condition", 2, date(2021, 3, 5), concept=102)
    s.event("condition", 3, date(2020, 1, 1), concept=110)  # hypertension only: no entry
    assert s.cohort({"entry": T2D_ENTRY}) == {1: date(2019, 1, 1), 2: date(2021, 3, 5)}
    # a drug 10 days after the earliest event qualifies; 10 days after the later one does not
    s.event("drug", 1, date(2019, 1, 11), concept=201)
    s.event("drug", 2, date(2021, 3, 25), concept=201)
    drug = {"drug": {"codes": ["ATC:A10BA02"], "window": [0, 15]}}
    assert cohort_of(s, inclusion=[drug]) == {1}
    s.event("drug", 1, date(2020, 6, 11), concept=201)  # relative to the later event only
    s.con.execute("DELETE FROM drug_exposure WHERE drug_exposure_start_date = '2019-01-11'")
    assert cohort_of(s, inclusion=[drug]) == set()


def test_entry_on_measurement_with_value() -> None:
    s = Store().person(1).person(2).person(3)
    s.event("measurement", 1, -30, concept=301, value=6.5)
    s.event("measurement", 1, 0, concept=301, value=8.0)
    s.event("measurement", 2, 0, concept=301, value=7.0)
    s.event("measurement", 3, 0, concept=301, value=None)
    entry = {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 7.0}}}
    assert s.cohort({"entry": entry}) == {1: INDEX}  # index skips the non-qualifying -30


def test_persons_absent_from_person_table_are_not_counted() -> None:
    s = with_entry(1)
    s.event("condition", 99, 0, concept=101)  # orphan event
    assert set(s.cohort({"entry": T2D_ENTRY})) == {1}


def test_one_row_per_person() -> None:
    s = with_entry(1)
    s.event("condition", 1, 0, concept=101, source=102)  # same day, matches twice over
    s.con.execute("INSERT INTO person (person_id, year_of_birth) VALUES (1, 1960)")  # dup row
    query = compile_cohort(load_cohort({"entry": T2D_ENTRY}))
    assert s.con.execute(query.sql, query.params).fetchall() == [(1, INDEX)]


# --- one test per criterion kind ---------------------------------------------------------

EVENT_CASES = {
    "condition": (110, "ICD10:I10"),
    "drug": (201, "ATC:A10BA02"),
    "procedure": (401, "CPT4:99213"),
    "measurement": (301, "LOINC:4548-4"),
    "visit": (501, "Visit:IP"),
}


@pytest.mark.parametrize("kind", list(EVENT_CASES))
def test_event_criterion(kind: str) -> None:
    concept, code = EVENT_CASES[kind]
    s = with_entry(1, 2, 3)
    s.event(kind, 1, -5, concept=concept, value=1.0)
    s.event(kind, 2, -5, concept=999, value=1.0)  # another concept
    s.event(kind, 3, -5, concept=None, source=concept, value=1.0)  # source concept only
    assert cohort_of(s, inclusion=[{kind: {"codes": [code]}}]) == {1, 3}
    assert cohort_of(s, exclusion=[{kind: {"codes": [code]}}]) == {2}


def test_observation_period_criterion() -> None:
    s = with_entry(1, 2, 3, 4, 5)
    s.observation(1, -365, 100)  # started exactly 365 days before
    s.observation(2, -364, 100)  # one day short
    s.observation(3, -1000, -1)  # ended before index
    s.observation(4, -1000, 0)  # ends on the index date
    s.observation(5, -10, 10).observation(5, -900, -20)  # only the short one contains index
    crit = {"observation_period": {"min_prior_observation_days": 365}}
    assert cohort_of(s, inclusion=[crit]) == {1, 4}
    assert cohort_of(s, inclusion=[{"observation_period": {}}]) == {1, 2, 4, 5}
    assert cohort_of(s, exclusion=[crit]) == {2, 3, 5}


def test_age_criterion_bounds_are_inclusive() -> None:
    s = Store()
    for pid, yob in [(1, 1980), (2, 1981), (3, 1945), (4, 1944)]:  # ages 40, 39, 75, 76 in 2020
        s.person(pid, yob=yob).event("condition", pid, 0, concept=101)
    assert cohort_of(s, inclusion=[{"age": {"min": 40, "max": 75}}]) == {1, 3}
    assert cohort_of(s, inclusion=[{"age": {"min": 40}}]) == {1, 3, 4}
    assert cohort_of(s, inclusion=[{"age": {"max": 39}}]) == {2}
    assert cohort_of(s, exclusion=[{"age": {"min": 40, "max": 75}}]) == {2, 4}


def test_sex_criterion() -> None:
    s = Store()
    for pid, gender in [(1, F), (2, M), (3, None), (4, 0)]:
        s.person(pid, gender=gender).event("condition", pid, 0, concept=101)
    assert cohort_of(s, inclusion=[{"sex": "F"}]) == {1}
    assert cohort_of(s, inclusion=[{"sex": "M"}]) == {2}
    # unknown gender is not "F": excluding F keeps persons 2, 3 and 4
    assert cohort_of(s, exclusion=[{"sex": "F"}]) == {2, 3, 4}


def test_any_group_is_an_or_and_nests() -> None:
    s = with_entry(1, 2, 3, 4)
    s.event("condition", 1, -1, concept=110)
    s.event("drug", 2, -1, concept=202)
    s.con.execute("UPDATE person SET gender_concept_id = ? WHERE person_id = 4", [M])
    group = {"any": [{"condition": {"codes": ["ICD10:I10"]}}, {"drug": {"codes": ["ATC:C10AA%"]}}]}
    assert cohort_of(s, inclusion=[group]) == {1, 2}
    nested = {"any": [group, {"sex": "M"}]}
    assert cohort_of(s, inclusion=[nested]) == {1, 2, 4}
    assert cohort_of(s, exclusion=[nested]) == {3}


def test_exclusion_removes_anyone_matching_any_exclusion() -> None:
    s = with_entry(1, 2, 3, 4)
    s.event("condition", 1, -100, concept=120)  # cancer before index
    s.event("condition", 2, 100, concept=120)  # cancer after index: outside [null, 0]
    s.event("drug", 3, -1, concept=201)
    cancer = {"condition": {"codes": ["ICD10:C%"], "window": [None, 0]}}
    metformin = {"drug": {"codes": ["ATC:A10BA02"]}}
    assert cohort_of(s, exclusion=[cancer]) == {2, 3, 4}
    assert cohort_of(s, exclusion=[cancer, metformin]) == {2, 4}
    assert cohort_of(s, inclusion=[{"age": {"min": 18}}], exclusion=[metformin]) == {1, 2, 4}


def test_inclusion_criteria_are_anded() -> None:
    s = with_entry(1, 2, 3)
    for pid in (1, 2):
        s.event("drug", pid, -1, concept=201)
    s.event("condition", 1, -1, concept=110)
    s.event("condition", 3, -1, concept=110)
    inclusion = [{"drug": {"codes": ["ATC:A10BA02"]}}, {"condition": {"codes": ["ICD10:I10"]}}]
    assert cohort_of(s, inclusion=inclusion) == {1}


# --- measurement values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ({"gt": 7.0}, {3}),
        ({"gte": 7.0}, {2, 3}),
        ({"lt": 7.0}, {1}),
        ({"lte": 7.0}, {1, 2}),
        ({"eq": 7.0}, {2}),
        ({"gt": 6.95, "lt": 7.05}, {2}),
        ({"gte": 6.9, "lte": 7.0}, {1, 2}),
        ({"gt": 100.0}, set()),
    ],
)
def test_value_operators(ops: dict[str, float], expected: set[int]) -> None:
    s = with_entry(1, 2, 3, 4)
    for pid, value in [(1, 6.9), (2, 7.0), (3, 7.1), (4, None)]:
        s.event("measurement", pid, -1, concept=301, value=value)
    crit = {"measurement": {"codes": ["LOINC:4548-4"], "value": ops}}
    assert cohort_of(s, inclusion=[crit]) == expected


def test_one_event_must_satisfy_all_value_ops() -> None:
    s = with_entry(1)
    s.event("measurement", 1, -1, concept=301, value=5.0)  # satisfies lt 8 only
    s.event("measurement", 1, -2, concept=301, value=9.0)  # satisfies gt 6 only
    crit = {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 6.0, "lt": 8.0}}}
    assert cohort_of(s, inclusion=[crit]) == set()


# --- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "offset", "included"),
    [
        ([-365, 0], -365, True),  # inclusive start
        ([-365, 0], 0, True),  # inclusive end
        ([-365, 0], -366, False),  # day before start
        ([-365, 0], 1, False),  # day after end
        ([None, 0], -5000, True),  # null start
        ([None, 0], 1, False),
        ([0, None], 5000, True),  # null end
        ([0, None], -1, False),
        ([None, None], -9000, True),  # both null
        ([None, None], 9000, True),
        ([1, 30], 0, False),  # window after index
        ([1, 30], 1, True),
        ([1, 30], 30, True),
        ([1, 30], 31, False),
    ],
)
def test_window_edges(window: list[int | None], offset: int, included: bool) -> None:
    s = with_entry(1)
    s.event("drug", 1, offset, concept=201)
    crit = {"drug": {"codes": ["ATC:A10BA02"], "window": window}}
    assert cohort_of(s, inclusion=[crit]) == ({1} if included else set())


def test_occurrences_min_counts_rows() -> None:
    s = with_entry(1, 2)
    for day in (-10, -20, -30):
        s.event("drug", 1, day, concept=201)
    for day in (-10, -20):
        s.event("drug", 2, day, concept=201)
    s.event("drug", 2, -400, concept=201)  # outside the window: not counted
    crit = {"drug": {"codes": ["ATC:A10BA02"], "window": [-365, 0], "occurrences": {"min": 3}}}
    assert cohort_of(s, inclusion=[crit]) == {1}
    crit["drug"]["occurrences"] = {"min": 2}
    assert cohort_of(s, inclusion=[crit]) == {1, 2}


# --- code and concept resolution -------------------------------------------------------


def test_percent_is_a_prefix_wildcard_and_exact_codes_match_exactly() -> None:
    s = Store()
    for pid, concept in enumerate([101, 102, 103, 104], start=1):  # E11, E11.9, E1, XE11
        s.person(pid).event("condition", pid, 0, concept=concept)
    assert set(s.cohort({"entry": {"condition": {"codes": ["ICD10:E11%"]}}})) == {1, 2}
    assert set(s.cohort({"entry": {"condition": {"codes": ["ICD10:E11"]}}})) == {1}
    assert set(s.cohort({"entry": {"condition": {"codes": ["ICD10:%11"]}}})) == {1, 4}
    assert set(s.cohort({"entry": {"condition": {"codes": ["ATC:E11%"]}}})) == set()  # vocab


def test_underscore_is_literal() -> None:
    s = Store()
    for pid, concept in [(1, 601), (2, 602), (3, 603)]:  # A_1, AB1, A_22
        s.person(pid).event("condition", pid, 0, concept=concept)
    assert set(s.cohort({"entry": {"condition": {"codes": ["LOCAL:A_1"]}}})) == {1}
    assert set(s.cohort({"entry": {"condition": {"codes": ["LOCAL:A_%"]}}})) == {1, 3}


def test_concept_or_source_concept_matches_and_each_event_counts_once() -> None:
    s = with_entry(1, 2, 3)
    s.event("drug", 1, -1, concept=201, source=None)
    s.event("drug", 2, -1, concept=0, source=201)
    s.event("drug", 3, -1, concept=201, source=201)  # one event matching on both columns
    crit = {"drug": {"codes": ["ATC:A10BA02"]}}
    assert cohort_of(s, inclusion=[crit]) == {1, 2, 3}
    twice = {"drug": {"codes": ["ATC:A10BA02"], "occurrences": {"min": 2}}}
    assert cohort_of(s, inclusion=[twice]) == set()


def test_concepts_include_descendants_via_concept_ancestor() -> None:
    s = with_entry(1, 2, 3, 4)
    s.ancestor(7000, 7001).ancestor(7000, 7002).ancestor(7001, 7002)
    for pid, concept in [(1, 7000), (2, 7001), (3, 7002), (4, 7003)]:
        s.event("drug", pid, -1, concept=concept)
    assert cohort_of(s, inclusion=[{"drug": {"concepts": [7000]}}]) == {1, 2, 3}
    assert cohort_of(s, inclusion=[{"drug": {"concepts": [7001]}}]) == {2, 3}
    # ids absent from concept and concept_ancestor still match themselves
    assert cohort_of(s, inclusion=[{"drug": {"concepts": [7003]}}]) == {4}


def test_codes_and_concepts_are_a_union() -> None:
    s = with_entry(1, 2, 3)
    s.event("drug", 1, -1, concept=201)
    s.event("drug", 2, -1, concept=8000)
    s.event("drug", 3, -1, concept=202)
    crit = {"drug": {"codes": ["ATC:A10BA02"], "concepts": [8000]}}
    assert cohort_of(s, inclusion=[crit]) == {1, 2}


def test_sql_injection_in_a_code_is_inert_data() -> None:
    evil = "E11'; DROP TABLE person; --"
    s = with_entry(1)
    s.con.execute(
        "INSERT INTO concept (concept_id, vocabulary_id, concept_code) VALUES (900, 'ICD10', ?)",
        [evil],
    )
    s.person(2).event("condition", 2, 0, concept=900)
    definition = {"entry": {"condition": {"codes": [f"ICD10:{evil}"]}}}
    query = compile_cohort(load_cohort(definition))
    assert evil not in query.sql and "DROP" not in query.sql
    assert f"ICD10:{evil}" not in query.params and evil in query.params
    assert set(s.cohort(definition)) == {2}  # matched as data, literally
    assert s.con.execute("SELECT count(*) FROM person").fetchone() == (2,)


# --- SQL shape and dialects ------------------------------------------------------------

DEMO = {
    "entry": {"condition": {"codes": ["ICD10:E11%"]}},
    "inclusion": [
        {"age": {"min": 40, "max": 75}},
        {"sex": "F"},
        {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 7.0}, "window": [-365, 0]}},
        {"drug": {"codes": ["ATC:A10BA02"], "window": [-365, 0], "occurrences": {"min": 2}}},
        {"any": [{"condition": {"codes": ["ICD10:I10"]}}, {"drug": {"codes": ["ATC:C10AA%"]}}]},
    ],
    "exclusion": [{"condition": {"codes": ["ICD10:C%"], "window": [None, 0]}}],
}


def test_every_user_value_is_a_parameter() -> None:
    query = compile_cohort(load_cohort(DEMO))
    literals = {
        lit.this
        for lit in sqlglot.parse_one(query.sql, read="duckdb").find_all(sqlglot.exp.Literal)
    }
    assert literals <= {"\\", "1"}  # the ESCAPE character and EXISTS (SELECT 1 ...)
    for value in ("E11%", "4548-4", "A10BA02", "C10AA%", "C%", "I10", "LOINC", "ATC"):
        assert value in query.params
    assert {7.0, -365, 40, 75, 2, F} <= set(query.params)


def test_demo_cohort_runs_end_to_end() -> None:
    s = Store()
    s.person(1, yob=1960).event("condition", 1, 0, concept=102)
    s.event("measurement", 1, -30, concept=301, value=8.1)
    s.event("drug", 1, -200, concept=201).event("drug", 1, -20, concept=201)
    s.event("drug", 1, -20, concept=202)
    s.person(2, yob=1960).event("condition", 2, 0, concept=102)  # lacks everything else
    s.person(3, yob=1960).event("condition", 3, 0, concept=102)
    s.event("measurement", 3, -30, concept=301, value=8.1)
    s.event("drug", 3, -200, concept=201).event("drug", 3, -20, concept=201)
    s.event("condition", 3, -20, concept=110).event("condition", 3, -999, concept=120)
    assert s.cohort(DEMO) == {1: INDEX}


def test_postgres_rendering_uses_format_placeholders() -> None:
    duck = compile_cohort(load_cohort(DEMO))
    pg = compile_cohort(load_cohort(DEMO), dialect="postgres")
    assert pg.paramstyle == "format" and duck.paramstyle == "qmark"
    assert pg.params == duck.params
    assert pg.sql.count("%s") == len(pg.params) and "?" not in pg.sql
    assert re.sub(r"%s", "", pg.sql).count("%") == 0  # nothing psycopg would misread
    assert "DOUBLE PRECISION" in pg.sql and "EXTRACT(YEAR FROM" in pg.sql
    sqlglot.parse_one(pg.sql.replace("%s", "NULL"), read="postgres")  # well-formed


# --- property: compiled cohort == independent pure-Python evaluation --------------------

KINDS = list(DOMAINS)
CODES = ["A:1", "A:10", "A:1%", "A:2_", "B:1", "B:%"]


def _random_store(rng: np.random.Generator) -> tuple[Store, dict[str, Any]]:
    s = Store()
    s.con.execute("DELETE FROM concept")
    concepts = [
        (c, "A" if c < 10 else "B", code)
        for c, code in [
            (1, "1"),
            (2, "10"),
            (3, "11"),
            (4, "2_"),
            (5, "2x"),
            (11, "1"),
            (12, "2"),
        ]
    ]
    s.con.executemany(
        "INSERT INTO concept (concept_id, vocabulary_id, concept_code) VALUES (?, ?, ?)", concepts
    )
    ancestors = [(1, 2), (1, 3), (12, 5)]
    for a, d in ancestors:
        s.ancestor(a, d)
    persons = {}
    for pid in range(40):
        yob = int(rng.integers(1940, 2000))
        gender = [F, M, None][int(rng.integers(0, 3))]
        persons[pid] = (yob, gender)
    people = pd.DataFrame(
        {
            "person_id": list(persons),
            "year_of_birth": [yob for yob, _ in persons.values()],
            "gender_concept_id": pd.array([g for _, g in persons.values()], dtype="Int64"),
        }
    )
    s.insert_frame("person", people)
    events: list[tuple[str, int, date, int | None, int | None, float | None]] = []
    pool = [None, 0, 1, 2, 3, 4, 5, 11, 12, 77]
    for _ in range(500):
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        pid = int(rng.integers(0, 45))  # some persons are absent from `person`
        when = INDEX + timedelta(days=int(rng.integers(-400, 400)))
        concept = pool[int(rng.integers(0, len(pool)))]
        source = pool[int(rng.integers(0, len(pool)))]
        value = None if rng.random() < 0.2 else float(rng.integers(0, 10))
        events.append((kind, pid, when, concept, source, value if kind == "measurement" else None))
    for kind in KINDS:
        table, concept_col, source_col, date_col = DOMAINS[kind]
        rows = [e for e in events if e[0] == kind]
        frame = pd.DataFrame(
            {
                f"{table}_id": range(len(rows)),
                "person_id": [e[1] for e in rows],
                date_col: [e[2] for e in rows],
                concept_col: pd.array([e[3] for e in rows], dtype="Int64"),
                source_col: pd.array([e[4] for e in rows], dtype="Int64"),
            }
        )
        if kind == "measurement":
            frame["value_as_number"] = pd.array([e[5] for e in rows], dtype="Float64")
        s.insert_frame(table, frame)
    periods = []
    for pid in range(40):
        start = INDEX + timedelta(days=int(rng.integers(-800, 100)))
        end = start + timedelta(days=int(rng.integers(0, 900)))
        periods.append((pid, start, end))
    s.con.executemany(
        "INSERT INTO observation_period VALUES (?, ?, ?, ?, NULL)",
        [(pid, pid, start, end) for pid, start, end in periods],
    )
    world = {
        "persons": persons,
        "events": events,
        "periods": periods,
        "concepts": concepts,
        "ancestors": ancestors,
    }
    return s, world


def _resolve(spec: Any, world: dict[str, Any]) -> set[int]:
    ids: set[int] = set()
    for code in spec.codes:
        vocab, value = code.split(":", 1)
        pattern = "".join(".*" if ch == "%" else re.escape(ch) for ch in value)
        ids |= {c for c, v, cc in world["concepts"] if v == vocab and re.fullmatch(pattern, cc)}
    for cid in spec.concepts:
        ids |= {cid} | {d for a, d in world["ancestors"] if a == cid}
    return ids


def _qualifying(kind: str, spec: Any, world: dict[str, Any], pid: int) -> list[date]:
    ids = _resolve(spec, world)
    out = []
    for k, p, when, concept, source, value in world["events"]:
        if k != kind or p != pid or (concept not in ids and source not in ids):
            continue
        if spec.value is not None:
            checks = {
                "gt": lambda a, b: a > b,
                "gte": lambda a, b: a >= b,
                "lt": lambda a, b: a < b,
                "lte": lambda a, b: a <= b,
                "eq": lambda a, b: a == b,
            }
            if value is None or not all(checks[op](value, v) for op, v in spec.value.ops()):
                continue
        out.append(when)
    return out


def _matches(c: Any, pid: int, index: date, world: dict[str, Any]) -> bool:
    yob, gender = world["persons"][pid]
    if c.kind in KINDS:
        spec = getattr(c, c.kind)
        lo, hi = spec.window
        n = sum(
            1
            for d in _qualifying(c.kind, spec, world, pid)
            if (lo is None or d >= index + timedelta(days=lo))
            and (hi is None or d <= index + timedelta(days=hi))
        )
        return n >= spec.occurrences.min
    if c.kind == "observation_period":
        need = c.observation_period.min_prior_observation_days
        return any(
            p == pid and s <= index - timedelta(days=need) and e >= index
            for p, s, e in world["periods"]
        )
    if c.kind == "age":
        age = index.year - yob
        return (c.age.min is None or age >= c.age.min) and (c.age.max is None or age <= c.age.max)
    if c.kind == "sex":
        return gender == GENDER_CONCEPTS[c.sex]
    return any(_matches(sub, pid, index, world) for sub in c.any)


def _reference(defn: CohortDefinition, world: dict[str, Any]) -> dict[int, date]:
    out = {}
    for pid in world["persons"]:
        dates = _qualifying(defn.entry.kind, defn.entry.spec, world, pid)
        if not dates:
            continue
        index = min(dates)
        if all(_matches(c, pid, index, world) for c in defn.inclusion) and not any(
            _matches(c, pid, index, world) for c in defn.exclusion
        ):
            out[pid] = index
    return out


PROPERTY_DEFINITIONS: list[dict[str, Any]] = [
    {"entry": {"condition": {"codes": ["A:1%"]}}},
    {"entry": {"drug": {"concepts": [1]}}, "inclusion": [{"age": {"min": 30, "max": 60}}]},
    {
        "entry": {"measurement": {"codes": ["A:10"], "value": {"gte": 3, "lt": 8}}},
        "exclusion": [{"sex": "M"}],
    },
    {
        "entry": {"visit": {"codes": ["B:%"], "concepts": [4]}},
        "inclusion": [{"procedure": {"codes": ["A:2_"], "window": [-200, 50]}}],
    },
    {
        "entry": {"condition": {"concepts": [1, 12]}},
        "inclusion": [
            {
                "measurement": {
                    "concepts": [2, 3],
                    "value": {"gt": 4},
                    "window": [None, 0],
                    "occurrences": {"min": 2},
                }
            }
        ],
        "exclusion": [{"observation_period": {"min_prior_observation_days": 100}}],
    },
    {
        "entry": {"procedure": {"codes": ["A:1", "B:1"]}},
        "inclusion": [
            {
                "any": [
                    {"drug": {"codes": ["A:1%"], "window": [0, None]}},
                    {"any": [{"sex": "F"}, {"age": {"max": 40}}]},
                ]
            }
        ],
        "exclusion": [
            {"visit": {"concepts": [12], "window": [-30, 30], "occurrences": {"min": 2}}}
        ],
    },
    {
        "entry": {"drug": {"codes": ["B:%"]}},
        "inclusion": [{"observation_period": {}}, {"condition": {"concepts": [77, 5]}}],
    },
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_cohort_equals_reference_evaluation(seed: int) -> None:
    store, world = _random_store(np.random.default_rng(seed))
    sizes = []
    for raw in PROPERTY_DEFINITIONS:
        defn = load_cohort(raw)
        expected = _reference(defn, world)
        assert store.cohort(defn) == expected, raw
        sizes.append(len(expected))
    assert sum(sizes) > 0 and any(0 < n < 40 for n in sizes)  # the data exercise the rules


def test_compiled_queries_are_remembered_by_criteria_and_dialect() -> None:
    from healthspace.cohort import compiler

    compiler._CACHE.clear()
    base = {"entry": {"condition": {"codes": ["ICD10:E11%"]}},
            "inclusion": [{"age": {"min": 40, "max": 75}}]}
    first = compile_cohort(load_cohort({**base, "name": "first"}))
    first.params.append("tampered")  # a caller's copy: the remembered query is not changed
    renamed = compile_cohort(load_cohort({**base, "name": "renamed", "description": "same"}))
    assert (renamed.sql, renamed.params) == (first.sql, first.params[:-1])
    assert len(compiler._CACHE) == 1  # the name and description do not change the SQL
    older = compile_cohort(load_cohort({**base, "inclusion": [{"age": {"min": 41}}]}))
    assert older.params != renamed.params and len(compiler._CACHE) == 2
    postgres = compile_cohort(load_cohort(base), dialect="postgres")
    assert "%s" in postgres.sql and "?" in renamed.sql and len(compiler._CACHE) == 3
    for k in range(compiler.CACHE_SIZE + 5):  # bounded: the oldest are dropped
        bounds = {"min": k % 130, "max": 130 + k % 20}
        compile_cohort(load_cohort({**base, "inclusion": [{"age": bounds}]}))
    assert len(compiler._CACHE) == compiler.CACHE_SIZE
