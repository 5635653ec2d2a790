"""What happened to a node's matched patients: candidate treatments and outcomes after index.

Runs on the node against the matched persons only (a session-local temp table); everything
it returns is per person and stays on the node — ``similar_patients`` aggregates it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from healthspace.analyses.similar_params import Outcome, Treatment

MATCHED = "_sp_matched"
EPOCH = np.datetime64("1970-01-01", "D")
# The matched persons' events from the index date on, copied once per lookup so every
# treatment and outcome reads a few hundred rows instead of scanning the store again.
EVENTS = {
    "drug_exposure": ("drug_concept_id", "drug_source_concept_id", "drug_exposure_start_date"),
    "procedure_occurrence": ("procedure_concept_id", "procedure_source_concept_id",
                             "procedure_date"),
    "condition_occurrence": ("condition_concept_id", "condition_source_concept_id",
                             "condition_start_date"),
}


def _copy(table: str) -> str:
    return f"_sp_{table}"


def store_matched(con: Any, person_id: np.ndarray, index_day: np.ndarray) -> None:
    """``CREATE TEMP TABLE _sp_matched (person_id, index_date)`` of the matched persons."""
    frame = pd.DataFrame({"person_id": person_id.astype(np.int64),
                          "index_date": (EPOCH + index_day.astype("timedelta64[D]"))})
    source = "_hs_src_sp_matched"
    con.execute(f"DROP TABLE IF EXISTS temp.{MATCHED}")
    con.register(source, frame)
    try:
        con.execute(f"CREATE TEMP TABLE {MATCHED} AS SELECT CAST(person_id AS BIGINT) AS "
                    f"person_id, CAST(index_date AS DATE) AS index_date FROM {source}")
    finally:
        con.unregister(source)
    for table, (concept, source_concept, date) in EVENTS.items():
        con.execute(f"DROP TABLE IF EXISTS temp.{_copy(table)}")
        con.execute(
            f"CREATE TEMP TABLE {_copy(table)} AS SELECT e.person_id, e.{concept}, "
            f"e.{source_concept}, e.{date} FROM {table} e "
            f"JOIN {MATCHED} m ON e.person_id = m.person_id WHERE e.{date} >= m.index_date")


def drop_matched(con: Any) -> None:
    for table in (MATCHED, *(_copy(t) for t in EVENTS)):
        con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _concepts(codes: list[str]) -> tuple[str, list[Any]]:
    """SQL selecting the concept ids of ``codes`` (``%`` the only wildcard), and its args."""
    terms: list[str] = []
    args: list[Any] = []
    for code in codes:
        vocabulary, _, value = code.partition(":")
        if "%" in value:
            terms.append("(vocabulary_id = ? AND concept_code LIKE ? ESCAPE '\\')")
            args += [vocabulary, value.replace("\\", "\\\\").replace("_", "\\_")]
        else:
            terms.append("(vocabulary_id = ? AND concept_code = ?)")
            args += [vocabulary, value]
    return f"SELECT concept_id FROM concept WHERE {' OR '.join(terms)}", args


def _events(table: str, concept: str, source: str, date: str, codes: list[str],
            low: str, high: str) -> tuple[str, list[Any]]:
    """``(person_id, day)`` of matched persons' events of ``codes`` in ``(low, high)``."""
    concepts, args = _concepts(codes)
    sql = (f"SELECT m.person_id, e.{date} AS day FROM {MATCHED} m "
           f"JOIN {_copy(table)} e ON e.person_id = m.person_id "
           f"WHERE {low} AND {high} AND (e.{concept} IN ({concepts}) "
           f"OR e.{source} IN ({concepts}))")
    return sql, args + args


def treated(con: Any, treatment: Treatment, person_id: np.ndarray) -> np.ndarray:
    """Whether each matched person started ``treatment`` within its window after index."""
    window = int(treatment.window_days)
    low = "e.{d} >= m.index_date"
    high = f"e.{{d}} <= m.index_date + INTERVAL {window} DAY"
    parts: list[str] = []
    args: list[Any] = []
    for table, concept, source, date in (
            ("drug_exposure", "drug_concept_id", "drug_source_concept_id",
             "drug_exposure_start_date"),
            ("procedure_occurrence", "procedure_concept_id", "procedure_source_concept_id",
             "procedure_date")):
        sql, more = _events(table, concept, source, date, treatment.codes,
                            low.format(d=date), high.format(d=date))
        parts.append(sql)
        args += more
    rows = con.execute(f"SELECT DISTINCT person_id FROM ({' UNION ALL '.join(parts)}) t",
                       args).fetchall()
    return np.isin(person_id, np.asarray([r[0] for r in rows], dtype=np.int64))


def follow_up_end(con: Any, person_id: np.ndarray, index_day: np.ndarray) -> np.ndarray:
    """Day (since epoch) each matched person's follow-up ends: the end of the observation
    period holding the index date (else the index date itself)."""
    rows = con.execute(
        f"SELECT m.person_id, MAX(op.observation_period_end_date) AS d FROM {MATCHED} m "
        "JOIN observation_period op ON op.person_id = m.person_id "
        "AND op.observation_period_start_date <= m.index_date "
        "AND op.observation_period_end_date >= m.index_date GROUP BY m.person_id").df()
    end = index_day.astype(np.int64).copy()
    if len(rows):
        days = _days(rows["d"])
        pos = np.searchsorted(person_id, rows["person_id"].to_numpy(np.int64))
        end[pos] = np.maximum(end[pos], days)
    return end


def _days(column: pd.Series) -> np.ndarray:
    return pd.to_datetime(column).to_numpy("datetime64[D]").astype(np.int64)


def _first_after(con: Any, sql: str, args: list[Any], person_id: np.ndarray) -> np.ndarray:
    """First event day per matched person (``inf`` without one)."""
    frame = con.execute(f"SELECT person_id, MIN(day) AS d FROM ({sql}) t GROUP BY person_id",
                        args).df()
    first = np.full(len(person_id), np.inf)
    if len(frame):
        pos = np.searchsorted(person_id, frame["person_id"].to_numpy(np.int64))
        first[pos] = _days(frame["d"]).astype(np.float64)
    return first


def death_day(con: Any, person_id: np.ndarray) -> np.ndarray:
    """Day of death per matched person (``inf`` when alive or unknown)."""
    sql = (f"SELECT m.person_id, d.death_date AS day FROM {MATCHED} m "
           "JOIN death d ON d.person_id = m.person_id")
    return _first_after(con, sql, [], person_id)


def outcome_times(con: Any, outcome: Outcome, person_id: np.ndarray, index_day: np.ndarray,
                  end_day: np.ndarray, death: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days from index to the outcome or censoring, and the 0/1 event flag.

    Follow-up ends at the first of: the outcome, the horizon, the end of observation and —
    when death is not part of the outcome — death (censored). An event on the index date
    itself does not count: the outcome must come after the state the patient was matched on.
    """
    first = np.full(len(person_id), np.inf)
    if outcome.codes:
        sql, args = _events("condition_occurrence", "condition_concept_id",
                            "condition_source_concept_id", "condition_start_date",
                            outcome.codes, "e.condition_start_date > m.index_date", "TRUE")
        first = _first_after(con, sql, args, person_id)
    after = np.where(death > index_day, death, np.inf)
    if outcome.death:
        first = np.minimum(first, after)
    stop = np.minimum(end_day.astype(np.float64), index_day + float(outcome.horizon_days))
    if not outcome.death:
        stop = np.minimum(stop, after)
    event = first <= stop
    duration = np.where(event, first, stop) - index_day
    return np.maximum(duration, 0.0), event.astype(np.int64)
