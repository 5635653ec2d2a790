"""A node's feature matrix for the similar-patient lookup, built once per store version.

Every candidate is described at their index date (the cohort's entry event): age, sex, every
diagnosis code recorded up to the index date, every drug started in the lookback window, and
the latest value of every lab in the lookback window. Code sets are sparse 0/1 matrices over
the full codes; a lookup compares them at its own prefix level (:func:`prefix_sets`), so one
matrix serves every lookup on the same cohort. The node keeps matrices in a
:class:`FeatureCache` that lives as long as its store connection: a re-ingest opens a new
connection and the matrices are rebuilt (:meth:`FeatureCache.rebuild`), not each query.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from healthspace.cdm.schema import GENDER_CONCEPTS
from healthspace.cohort.dataset_sql import AGE_AT_INDEX

MAX_LABS = 200  # lab codes kept per node, the most frequently measured first
CACHE_ENTRIES = 8


@dataclass(frozen=True)
class FeatureMatrix:
    """One row per cohort member; ``person_id`` and everything else stay on the node."""

    person_id: np.ndarray  # int64
    index_day: np.ndarray  # int64 days since 1970-01-01
    age: np.ndarray  # float64 completed years at index
    male: np.ndarray  # float64 1 / 0, NaN unknown
    labs: np.ndarray  # float64 (n, L), NaN missing
    lab_codes: tuple[str, ...]
    conditions: sparse.csr_matrix  # bool (n, C)
    condition_codes: tuple[str, ...]
    drugs: sparse.csr_matrix  # bool (n, D)
    drug_codes: tuple[str, ...]
    built_seconds: float = 0.0
    # (set name, prefix) -> the code sets at that prefix, computed once per matrix.
    _grouped: dict[tuple[str, int | None], tuple[sparse.csr_matrix, tuple[str, ...]]] = field(
        default_factory=dict, repr=False, compare=False)

    def code_sets(self, name: str, prefix: int | None
                  ) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
        """The ``conditions`` or ``drugs`` sets at ``prefix`` characters (memoised)."""
        key = (name, prefix)
        hit = self._grouped.get(key)
        if hit is None:
            matrix, codes = ((self.conditions, self.condition_codes) if name == "conditions"
                             else (self.drugs, self.drug_codes))
            hit = prefix_sets(matrix, codes, prefix)
            self._grouped[key] = hit
        return hit

    @property
    def n(self) -> int:
        return len(self.person_id)

    def numeric(self, feature: str) -> np.ndarray:
        """``age`` or a lab code's column (NaN where missing; all NaN for an unknown lab)."""
        if feature == "age":
            return self.age
        if feature in self.lab_codes:
            return self.labs[:, self.lab_codes.index(feature)]
        return np.full(self.n, np.nan)


def _code(vocabulary: str, code: str) -> str:
    return f"{vocabulary}:{code}"


def build(con: Any, cohort_sql: str, params: Sequence[Any], lookback_days: int) -> FeatureMatrix:
    """Build the matrix of the cohort ``cohort_sql`` (``person_id, index_date``) on ``con``."""
    started = time.perf_counter()
    base = f"WITH c AS ({cohort_sql}) "
    args = list(params)
    people = con.execute(
        base + f"SELECT en.person_id, CAST(en.index_date AS DATE) AS d, {AGE_AT_INDEX} AS age, "
        "p.gender_concept_id AS g FROM c AS en JOIN person p ON p.person_id = en.person_id "
        "ORDER BY en.person_id", args).df()
    pid = people["person_id"].to_numpy(np.int64)
    days = (pd.to_datetime(people["d"]).to_numpy("datetime64[D]").astype(np.int64))
    gender = people["g"].to_numpy()
    male = np.where(gender == GENDER_CONCEPTS["M"], 1.0,
                    np.where(gender == GENDER_CONCEPTS["F"], 0.0, np.nan))
    window = (f"e.{{date}} <= c.index_date AND e.{{date}} >= c.index_date - "
              f"INTERVAL {int(lookback_days)} DAY")
    conditions, condition_codes = _code_set(
        con, base + "SELECT DISTINCT c.person_id, k.vocabulary_id, k.concept_code FROM c "
        "JOIN condition_occurrence e ON e.person_id = c.person_id "
        "JOIN concept k ON k.concept_id = e.condition_concept_id "
        "WHERE e.condition_start_date <= c.index_date", args, pid)
    drugs, drug_codes = _code_set(
        con, base + "SELECT DISTINCT c.person_id, k.vocabulary_id, k.concept_code FROM c "
        "JOIN drug_exposure e ON e.person_id = c.person_id "
        "JOIN concept k ON k.concept_id = e.drug_concept_id "
        "WHERE " + window.format(date="drug_exposure_start_date"), args, pid)
    labs, lab_codes = _labs(
        con, base + "SELECT person_id, vocabulary_id, concept_code, v FROM ("
        "SELECT c.person_id, k.vocabulary_id, k.concept_code, e.value_as_number AS v, "
        "ROW_NUMBER() OVER (PARTITION BY c.person_id, e.measurement_concept_id "
        "ORDER BY e.measurement_date DESC, e.measurement_id DESC) AS r FROM c "
        "JOIN measurement e ON e.person_id = c.person_id "
        "JOIN concept k ON k.concept_id = e.measurement_concept_id "
        "WHERE e.value_as_number IS NOT NULL AND "
        + window.format(date="measurement_date") + ") WHERE r = 1", args, pid)
    return FeatureMatrix(
        person_id=pid, index_day=days, age=people["age"].to_numpy(np.float64), male=male,
        labs=labs, lab_codes=lab_codes, conditions=conditions,
        condition_codes=condition_codes, drugs=drugs, drug_codes=drug_codes,
        built_seconds=time.perf_counter() - started)


def _rows(pid: np.ndarray, persons: np.ndarray) -> np.ndarray:
    """Row positions of ``persons`` in the sorted ``pid``."""
    return np.searchsorted(pid, persons)


def _code_set(con: Any, sql: str, args: list[Any], pid: np.ndarray
              ) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
    frame = con.execute(sql, args).df()
    codes = (frame["vocabulary_id"].astype(str) + ":" + frame["concept_code"].astype(str))
    vocabulary, columns = np.unique(codes.to_numpy(dtype=object).astype(str),
                                    return_inverse=True)
    rows = _rows(pid, frame["person_id"].to_numpy(np.int64))
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=bool), (rows, columns)), shape=(len(pid), len(vocabulary)))
    return matrix, tuple(str(v) for v in vocabulary)


def _labs(con: Any, sql: str, args: list[Any], pid: np.ndarray
          ) -> tuple[np.ndarray, tuple[str, ...]]:
    frame = con.execute(sql, args).df()
    codes = (frame["vocabulary_id"].astype(str) + ":" + frame["concept_code"].astype(str))
    kept = codes.value_counts().index[:MAX_LABS]
    vocabulary = tuple(sorted(str(c) for c in kept))
    out = np.full((len(pid), len(vocabulary)), np.nan)
    if vocabulary:
        position = {code: i for i, code in enumerate(vocabulary)}
        column = codes.map(position)
        keep = column.notna().to_numpy()
        rows = _rows(pid, frame["person_id"].to_numpy(np.int64)[keep])
        out[rows, column[keep].to_numpy(np.int64)] = frame["v"].to_numpy(np.float64)[keep]
    return out, vocabulary


def prefix_sets(matrix: sparse.csr_matrix, codes: Sequence[str], prefix: int | None
                ) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
    """The code sets at ``prefix`` characters of the code part (``None``: full codes)."""
    if prefix is None:
        return matrix, tuple(codes)
    grouped = [truncate(code, prefix) for code in codes]
    vocabulary, columns = np.unique(np.asarray(grouped, dtype=object).astype(str),
                                    return_inverse=True)
    if not len(codes):
        return matrix, ()
    mapping = sparse.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), columns)),
                                shape=(len(codes), len(vocabulary)))
    merged = (matrix.astype(np.float64) @ mapping) > 0
    return sparse.csr_matrix(merged), tuple(str(v) for v in vocabulary)


def truncate(code: str, prefix: int | None) -> str:
    """``ICD10:E11.9`` at 3 -> ``ICD10:E11``."""
    if prefix is None:
        return code
    vocabulary, _, value = code.partition(":")
    return _code(vocabulary, value[:prefix])


@dataclass
class FeatureCache:
    """Feature matrices by ``("cohort", SQL, parameters, lookback)`` — or, for a registry's
    rows, ``("registry", …, fingerprint)`` — for one store connection.

    The most recently used :data:`CACHE_ENTRIES` are kept. :meth:`rebuild` builds every cohort
    key again on a new connection — what the node agent does right after a re-ingest; a
    registry's matrix is built again at its next lookup (its rows live in that task's session).
    """

    entries: OrderedDict[tuple[Any, ...], FeatureMatrix] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    builds: int = 0

    def get(self, key: tuple[Any, ...], make: Callable[[], FeatureMatrix]) -> FeatureMatrix:
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None:
                self.entries.move_to_end(key)
                return hit
        built = make()
        with self.lock:
            self.entries[key] = built
            self.builds += 1
            while len(self.entries) > CACHE_ENTRIES:
                self.entries.popitem(last=False)
        return built

    def keys(self) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self.entries)

    def rebuild(self, con: Any) -> int:
        """Forget every matrix and build the cohort keys again on ``con``; returns how many."""
        keys = [key for key in self.keys() if key[0] == "cohort"]
        with self.lock:
            self.entries.clear()
        for key in keys:
            _, sql, params, lookback = key
            self.get(key, partial(build, con, sql, list(params), lookback))
        return len(keys)
