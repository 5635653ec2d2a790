"""Records scanned: the tables a statement reads, and the store rows a metered task covers."""

from __future__ import annotations

import duckdb
import pytest

from healthspace.analyses.scan import MeteredConnection, referenced_tables

# --- referenced_tables ------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT * FROM person", {"person"}),
    ("SELECT p.person_id FROM person p JOIN death d ON d.person_id = p.person_id "
     "LEFT JOIN observation_period op USING (person_id)",
     {"person", "death", "observation_period"}),
    # Subqueries: IN, EXISTS, scalar, derived table, UNION ALL branches.
    ("SELECT person_id FROM person WHERE person_id IN (SELECT person_id FROM death) "
     "AND EXISTS (SELECT 1 FROM concept c WHERE c.concept_id = gender_concept_id)",
     {"person", "death", "concept"}),
    ("SELECT (SELECT count(*) FROM measurement), x.n FROM (SELECT count(*) AS n FROM "
     "drug_exposure) AS x", {"measurement", "drug_exposure"}),
    ("SELECT person_id FROM condition_occurrence UNION ALL SELECT person_id FROM "
     "procedure_occurrence", {"condition_occurrence", "procedure_occurrence"}),
    # CTE names are not tables, nested ones neither; a derived table's alias neither.
    ("WITH cohort AS (WITH concepts_0 AS (SELECT concept_id FROM concept) SELECT person_id "
     "FROM condition_occurrence WHERE condition_concept_id IN (SELECT concept_id FROM "
     "concepts_0)) SELECT * FROM cohort c JOIN person p USING (person_id)",
     {"concept", "condition_occurrence", "person"}),
    ("SELECT * FROM (SELECT 1 AS x) AS person", set()),
    # A CTE that shadows the table it reads still reads it.
    ("WITH person AS (SELECT * FROM person WHERE year_of_birth > 1950) SELECT * FROM person",
     {"person"}),
    # Case folds; qualified names keep their table name; parameters are fine.
    ('SELECT * FROM "Person" WHERE person_id = ?', {"person"}),
    ("SELECT * FROM h3.main.death", {"death"}),
    # What a statement only writes is not read; temp-qualified tables are never the store's.
    ("CREATE OR REPLACE TEMP TABLE analysis_data AS SELECT person_id FROM person",
     {"person"}),
    ("DROP TABLE IF EXISTS temp.analysis_data", set()),
    ('SELECT count(*) FROM temp."analysis_data"', set()),
    ("SELECT unnest(CAST(? AS VARCHAR[])) AS v", set()),
])
def test_referenced_tables(sql, expected):
    assert referenced_tables(sql) == frozenset(expected)


def test_unparseable_sql_falls_back_to_every_identifier():
    got = referenced_tables("SELECT * FROM person WHERE (((")
    assert got == frozenset({"select", "from", "person", "where"})  # over-counts, misses none


# --- MeteredConnection -----------------------------------------------------------------------


@pytest.fixture
def con():
    """A store of three tables (5, 3 and 2 rows) and a connection kept open on it."""
    con = duckdb.connect()
    con.execute("CREATE TABLE person AS SELECT range AS person_id FROM range(5)")
    con.execute("CREATE TABLE death AS SELECT range AS person_id FROM range(3)")
    con.execute("CREATE TABLE analysis_data AS SELECT range AS x FROM range(2)")
    yield con
    con.close()


def test_each_store_table_is_counted_once_at_its_full_size(con):
    metered = MeteredConnection(con)
    assert metered.records_scanned() == 0
    rows = metered.execute("SELECT person_id FROM person WHERE person_id < ?", [2]).fetchall()
    assert rows == [(0,), (1,)]  # the statement itself runs unchanged
    assert metered.records_scanned() == 5  # the full table, whatever the filter
    metered.execute("SELECT * FROM person JOIN death USING (person_id)").fetchall()
    metered.execute("SELECT count(*) FROM PERSON").fetchall()
    assert metered.read == {"person", "death"}
    assert metered.records_scanned() == 5 + 3


def test_temp_tables_are_not_store_tables(con):
    metered = MeteredConnection(con)
    metered.execute("CREATE TEMP TABLE _consent_flip_pid AS SELECT 1 AS v")
    metered.execute("SELECT * FROM _consent_flip_pid").fetchall()
    assert metered.records_scanned() == 0
    # A temp table shadowing a store table: creating it and reading it by name read the temp
    # one; dropping it reads nothing. Only its source, person, was read.
    metered.execute("CREATE OR REPLACE TEMP TABLE analysis_data AS "
                    "SELECT person_id AS x FROM person")
    assert metered.execute("SELECT count(*) FROM analysis_data").fetchone() == (5,)
    assert metered.execute("SELECT count(*) FROM main.analysis_data").fetchone() == (5,)
    assert metered.records_scanned() == 5
    metered.execute("DROP TABLE temp.analysis_data")
    assert metered.read == {"person"} and metered.records_scanned() == 5
    # Once the temp table is gone the name is the store's again.
    metered.execute("SELECT * FROM analysis_data").fetchall()
    assert metered.records_scanned() == 5 + 2


def test_rows_are_counted_in_the_store_even_while_a_temp_table_shadows_them(con):
    metered = MeteredConnection(con)
    metered.execute("SELECT * FROM memory.main.death").fetchall()  # explicitly the store's
    metered.execute("CREATE TEMP TABLE death AS SELECT range AS person_id FROM range(50)")
    assert metered.records_scanned() == 3


def test_other_connection_attributes_pass_through(con):
    metered = MeteredConnection(con)
    assert metered.execute("SELECT 42").fetchall() == [(42,)]
    assert metered.sql("SELECT 1").fetchall() == [(1,)]  # unmetered, but still there
    assert metered.records_scanned() == 0
