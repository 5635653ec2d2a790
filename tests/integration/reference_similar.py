"""Independent brute-force similar-patient lookup over the raw CSV files of the sites (pooled).

Hand-written DuckDB SQL and pandas, sharing no code with ``healthspace.analyses``: it builds
each site's candidates, standardises with the pooled mean and SD, takes the k nearest per
site and tallies treatments and outcomes the way docs/similar-patients.md describes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from tests.integration.reference import _csv


def _concept_match(alias: str, codes: list[str]) -> str:
    terms = []
    for code in codes:
        vocab, _, value = code.partition(":")
        if value.endswith("%"):
            terms.append(f"({alias}.vocabulary_id = '{vocab}' AND "
                         f"starts_with({alias}.concept_code, '{value[:-1]}'))")
        else:
            terms.append(f"({alias}.vocabulary_id = '{vocab}' AND "
                         f"{alias}.concept_code = '{value}')")
    return " OR ".join(terms)


def candidates(site: Path, entry: list[str], lookback: int) -> dict[str, Any]:
    """Index date (first entry diagnosis), age, sex, code sets and latest labs per person."""
    con = duckdb.connect()
    for table in ("concept", "person", "condition_occurrence", "drug_exposure", "measurement",
                  "observation_period", "death", "procedure_occurrence"):
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {_csv(site, table)}")
    con.execute(f"""CREATE TABLE c AS
      SELECT o.person_id, min(o.condition_start_date)::DATE AS index_date
      FROM condition_occurrence o JOIN concept k
        ON k.concept_id = o.condition_concept_id OR k.concept_id = o.condition_source_concept_id
      WHERE {_concept_match('k', entry)} AND o.person_id IN (SELECT person_id FROM person)
      GROUP BY o.person_id""")
    people = con.execute("""
      SELECT c.person_id, c.index_date, p.gender_concept_id AS g,
        year(c.index_date) - p.year_of_birth - CASE WHEN
          month(c.index_date) * 100 + day(c.index_date)
          < p.month_of_birth * 100 + p.day_of_birth THEN 1 ELSE 0 END AS age
      FROM c JOIN person p USING (person_id) ORDER BY c.person_id""").df()
    conditions = con.execute("""
      SELECT DISTINCT o.person_id, k.vocabulary_id || ':' || k.concept_code AS code
      FROM c JOIN condition_occurrence o USING (person_id)
      JOIN concept k ON k.concept_id = o.condition_concept_id
      WHERE o.condition_start_date <= c.index_date""").df()
    drugs = con.execute(f"""
      SELECT DISTINCT x.person_id, k.vocabulary_id || ':' || k.concept_code AS code
      FROM c JOIN drug_exposure x USING (person_id)
      JOIN concept k ON k.concept_id = x.drug_concept_id
      WHERE x.drug_exposure_start_date BETWEEN c.index_date - {lookback} AND c.index_date
      """).df()
    labs = con.execute(f"""
      SELECT person_id, code, v FROM (
        SELECT m.person_id, k.vocabulary_id || ':' || k.concept_code AS code,
          m.value_as_number AS v, row_number() OVER (
            PARTITION BY m.person_id, m.measurement_concept_id
            ORDER BY m.measurement_date DESC, m.measurement_id DESC) AS r
        FROM c JOIN measurement m USING (person_id)
        JOIN concept k ON k.concept_id = m.measurement_concept_id
        WHERE m.value_as_number IS NOT NULL
          AND m.measurement_date BETWEEN c.index_date - {lookback} AND c.index_date)
      WHERE r = 1""").df()
    return {"con": con, "people": people, "conditions": conditions, "drugs": drugs,
            "labs": labs.pivot(index="person_id", columns="code", values="v")}


def _sets(frame: pd.DataFrame, persons: pd.Series, prefix: int) -> list[set[str]]:
    by_person: dict[int, set[str]] = {}
    for pid, code in zip(frame["person_id"], frame["code"], strict=True):
        vocab, _, value = code.partition(":")
        by_person.setdefault(int(pid), set()).add(f"{vocab}:{value[:prefix]}")
    return [by_person.get(int(p), set()) for p in persons]


def _jaccard(sets: list[set[str]], mine: set[str]) -> np.ndarray:
    out = []
    for s in sets:
        union = len(s | mine)
        out.append(0.0 if union == 0 else 1 - len(s & mine) / union)
    return np.asarray(out)


def lookup(sites: dict[str, dict[str, Any]], params: dict[str, Any],
           excluded: dict[str, set[int]] | None = None) -> dict[str, Any]:
    """The pooled brute-force answer: per site k nearest, then pooled tallies per group."""
    profile = params["profile"]
    excluded = excluded or {}
    pool = {name: s["people"][~s["people"]["person_id"].isin(excluded.get(name, set()))]
            for name, s in sites.items()}
    features = ["age", *profile["labs"]]
    values = {name: {f: (pool[name]["age"].astype(float).to_numpy() if f == "age" else
                         sites[name]["labs"].reindex(pool[name]["person_id"])
                         .get(f, pd.Series(np.nan, index=pool[name]["person_id"]))
                         .to_numpy(float)) for f in features} for name in sites}
    scale = {}
    for f in features:
        allv = np.concatenate([values[n][f] for n in sites])
        allv = allv[~np.isnan(allv)]
        scale[f] = (allv.mean(), allv.std(ddof=1))
    chosen: dict[str, pd.DataFrame] = {}
    for name, s in sites.items():
        people = pool[name].reset_index(drop=True)
        total = np.zeros(len(people))
        weight = 0
        for f in features:
            mine = profile["age"] if f == "age" else profile["labs"][f]
            z = (values[name][f] - mine) / scale[f][1]
            total += np.where(np.isnan(z), 1.0, z * z)
            weight += 1
        male = people["g"].to_numpy() == 8507
        total += (male != (profile["sex"] == "M")).astype(float)
        weight += 1
        for key, frame, prefix in (("conditions", s["conditions"], 3),
                                   ("drugs", s["drugs"], 5)):
            mine = {f"{c.split(':')[0]}:{c.split(':')[1][:prefix]}" for c in profile[key]}
            total += _jaccard(_sets(frame, people["person_id"], prefix), mine) ** 2
            weight += 1
        people["distance"] = np.sqrt(total / weight)
        chosen[name] = people.sort_values(["distance", "person_id"]).head(params["k"])
    return {"scale": scale, "chosen": chosen,
            "tallies": {name: _tallies(sites[name]["con"], chosen[name], params)
                        for name in sites}}


def _tallies(con: duckdb.DuckDBPyConnection, chosen: pd.DataFrame,
             params: dict[str, Any]) -> pd.DataFrame:
    """Per matched person: treated flags, and per outcome its days and event flag."""
    con.register("m_src", chosen[["person_id", "index_date"]])
    con.execute("CREATE OR REPLACE TABLE m AS SELECT person_id, index_date::DATE AS index_date "
                "FROM m_src")
    out = chosen[["person_id", "index_date", "distance"]].copy().set_index("person_id")
    for t in params["treatments"]:
        w = t.get("window_days", 90)
        treated = con.execute(f"""
          SELECT DISTINCT m.person_id FROM m JOIN drug_exposure x USING (person_id)
          JOIN concept k ON k.concept_id IN (x.drug_concept_id, x.drug_source_concept_id)
          WHERE ({_concept_match('k', t['codes'])})
            AND x.drug_exposure_start_date BETWEEN m.index_date AND m.index_date + {w}""").df()
        out[t["name"]] = out.index.isin(treated["person_id"])
    end = con.execute("""
      SELECT m.person_id, max(op.observation_period_end_date)::DATE AS e FROM m
      JOIN observation_period op ON op.person_id = m.person_id
       AND m.index_date BETWEEN op.observation_period_start_date AND op.observation_period_end_date
      GROUP BY m.person_id""").df().set_index("person_id")["e"]
    death = con.execute("SELECT m.person_id, min(d.death_date)::DATE AS d FROM m "
                        "JOIN death d USING (person_id) GROUP BY m.person_id").df() \
        .set_index("person_id")["d"]
    index = pd.to_datetime(out["index_date"])
    end_day = pd.to_datetime(end.reindex(out.index)).fillna(index)
    death_day = pd.to_datetime(death.reindex(out.index))
    for o in params["outcomes"]:
        first = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
        if o.get("codes"):
            ev = con.execute(f"""
              SELECT m.person_id, min(co.condition_start_date)::DATE AS f FROM m
              JOIN condition_occurrence co USING (person_id)
              JOIN concept k ON k.concept_id IN (co.condition_concept_id,
                                                 co.condition_source_concept_id)
              WHERE ({_concept_match('k', o['codes'])})
                AND co.condition_start_date > m.index_date
              GROUP BY m.person_id""").df().set_index("person_id")["f"]
            first = pd.to_datetime(ev.reindex(out.index))
        after = death_day.where(death_day > index)
        if o.get("death"):
            first = pd.concat([first, after], axis=1).min(axis=1)
        stop = pd.concat([end_day, index + pd.to_timedelta(o.get("horizon_days", 365), "D")],
                         axis=1).min(axis=1)
        if not o.get("death"):
            stop = pd.concat([stop, after], axis=1).min(axis=1)
        event = first.notna() & (first <= stop)
        days = (first.where(event, stop) - index).dt.days.clip(lower=0)
        out[f"{o['name']}_t"] = days.astype(float)
        out[f"{o['name']}_e"] = event.astype(int)
    return out


def coarsened(times: np.ndarray, k: int) -> np.ndarray:
    """The survival disclosure rule: times after the k-th largest become that time."""
    cutoff = np.sort(times)[len(times) - k]
    return np.where(times > cutoff, cutoff, times)


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def person_source_values(site: Path) -> tuple[list[int], list[str]]:
    """Every person's id and network pseudonym at a site."""
    rows = duckdb.connect().execute(
        f"SELECT person_id, person_source_value FROM {_csv(site, 'person')}").fetchall()
    return [int(r[0]) for r in rows], [str(r[1]) for r in rows]
