"""The node's differencing defence: remember exact releases per consumer, refuse near-duplicates.

``count(A) − count(A without target)`` reads one person's attribute off two exact counts that
each passed small-cell suppression. The node therefore keeps, per consumer organisation, the
person-id set of every exact cohort count it released, and refuses a new one whose set differs
from an earlier one by fewer than ``k`` persons. See docs/differencing.md.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from healthspace.core.clock import Clock, SystemClock, iso
from healthspace.core.errors import Refused
from healthspace.core.models import TaskAssignment
from healthspace.governance.policy import UsagePolicy
from healthspace.node import audit
from healthspace.node.budget import consumer_key
from healthspace.node.state import RELEASES_DDL, NodeState

Connector = Callable[[], AbstractContextManager[sqlite3.Connection]]
Key = tuple[int, int, int]  # (study_id, round, task_id): a retried task is the same release


def fingerprint(cohort: Mapping[str, Any] | None) -> str:
    """A stable digest of a cohort definition: the same question asked again has the same one."""
    text = json.dumps(cohort, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pack(persons: Sequence[int] | np.ndarray) -> bytes:
    """A person-id set as zlib-compressed sorted unique int64 bytes."""
    ids = np.unique(np.asarray(persons, dtype=np.int64))
    return zlib.compress(ids.astype("<i8").tobytes(), 6)


def unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i8")


def symmetric_difference_size(a: np.ndarray, b: np.ndarray) -> int:
    """|A Δ B| for sorted unique arrays."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return int(a.size + b.size - 2 * common)


class NearDuplicateRelease(Refused):
    """A count refused because its cohort nearly equals one already released to the consumer."""

    def __init__(self, message: str, earlier_studies: list[int]) -> None:
        super().__init__(message)
        self.earlier_studies = earlier_studies


class ReleaseMemory:
    """Exact releases per consumer in a SQLite table (the node's state file, or in memory)."""

    def __init__(self, connect: Connector, *, clock: Clock | None = None,
                 retention_days: int = 365) -> None:
        self._connect = connect
        self.clock = clock or SystemClock()
        self.retention_days = retention_days
        with self._connect() as db:
            for statement in filter(str.strip, RELEASES_DDL.split(";")):
                db.execute(statement)

    @classmethod
    def for_state(cls, state: NodeState, retention_days: int = 365) -> ReleaseMemory:
        return cls(state.connect, clock=state.clock, retention_days=retention_days)

    @classmethod
    def in_memory(cls, clock: Clock | None = None, retention_days: int = 365) -> ReleaseMemory:
        """For simulation and tests: one private in-memory database."""
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)

        @contextmanager
        def connect() -> Iterator[sqlite3.Connection]:
            db.execute("BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        return cls(connect, clock=clock, retention_days=retention_days)

    def purge(self) -> int:
        """Forget releases older than the retention period; returns how many."""
        cutoff = iso(self.clock.now() - timedelta(days=self.retention_days))
        with self._connect() as db:
            return db.execute("DELETE FROM releases WHERE released_at < ?", (cutoff,)).rowcount

    def conflicts(self, consumer: str, persons: Sequence[int], k: int, cohort_fp: str,
                  key: Key | None = None) -> list[int]:
        """Study ids of earlier releases to ``consumer`` this one could be differenced with.

        A pair is safe when the sets differ by at least ``k`` persons, when they are equal
        and asked by the same cohort definition (the same answer again), or when both counts
        are suppressed. Equal sets under a *different* definition are refused too: otherwise
        the refusal itself would tell whether the target was in the cohort.
        """
        self.purge()
        ids = np.unique(np.asarray(persons, dtype=np.int64))
        n = int(ids.size)
        with self._connect() as db:
            # |A Δ B| >= ||A| - |B||: only releases of a similar size can conflict.
            rows = db.execute(
                "SELECT study_id, round, task_id, fingerprint, size, min_cell, persons "
                "FROM releases WHERE consumer = ? AND abs(size - ?) < max(?, min_cell) "
                "ORDER BY released_at, study_id", (consumer, n, k)).fetchall()
        found: list[int] = []
        for study_id, round_no, task_id, fp, size, min_cell, blob in rows:
            if key is not None and (study_id, round_no, task_id) == tuple(key):
                continue  # a retry of this very task
            if n < k and size < min_cell:
                continue  # both released as "<k": nothing to subtract
            d = symmetric_difference_size(ids, unpack(blob))
            if d >= max(k, min_cell) or (d == 0 and fp == cohort_fp):
                continue
            if study_id not in found:
                found.append(int(study_id))
        return found

    def check(self, consumer: str, persons: Sequence[int], k: int, cohort_fp: str,
              key: Key | None = None) -> None:
        """Raise :class:`NearDuplicateRelease` naming the earlier studies (never the size of
        the difference) when ``conflicts`` finds any."""
        earlier = self.conflicts(consumer, persons, k, cohort_fp, key)
        if earlier:
            names = ", ".join(str(s) for s in earlier)
            raise NearDuplicateRelease(
                f"refused by the differencing defence: this cohort differs by fewer than {k} "
                f"persons from a cohort already released to {consumer} (study {names}); "
                f"ask for a noised count (dp_epsilon) instead", earlier)

    def record(self, consumer: str, key: Key, persons: Sequence[int], k: int,
               cohort_fp: str) -> bool:
        """Remember one release; False when this task was already recorded (a retry)."""
        ids = np.unique(np.asarray(persons, dtype=np.int64))
        with self._connect() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, consumer, cohort_fp, int(ids.size), int(k), pack(ids),
                 iso(self.clock.now())))
            return cur.rowcount == 1

    def releases(self, consumer: str | None = None) -> list[dict[str, Any]]:
        """What is remembered, without the person sets (for admins and tests)."""
        sql = ("SELECT study_id, round, task_id, consumer, fingerprint, size, min_cell, "
               "released_at FROM releases")
        args: tuple[Any, ...] = ()
        if consumer is not None:
            sql, args = sql + " WHERE consumer = ?", (consumer,)
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(sql + " ORDER BY released_at, study_id", args)]
            db.row_factory = None
        return rows

    def next_key(self) -> Key:
        """A fresh key for releases without a hub task (simulation)."""
        with self._connect() as db:
            top = int(db.execute("SELECT coalesce(max(study_id), 0) FROM releases")
                      .fetchone()[0])
        return (top + 1, 1, top + 1)


@dataclass
class ReleaseGuard:
    """The callable handed to an analysis (``LocalContext.release_guard``) for one task.

    It checks on call and remembers the persons; ``commit`` records the release once the
    task has succeeded, so a failed task leaves nothing behind.
    """

    memory: ReleaseMemory
    consumer: str
    key: Key
    k: int
    cohort_fp: str
    on_refuse: Callable[[NearDuplicateRelease], None] | None = None
    persons: list[int] | None = field(default=None, repr=False)

    def __call__(self, persons: Sequence[int]) -> None:
        try:
            self.memory.check(self.consumer, persons, self.k, self.cohort_fp, self.key)
        except NearDuplicateRelease as exc:
            if self.on_refuse is not None:
                self.on_refuse(exc)
            raise
        self.persons = [int(p) for p in persons]

    def commit(self) -> bool:
        if self.persons is None:
            return False  # no exact count was released (a DP or obfuscated task)
        return self.memory.record(self.consumer, self.key, self.persons, self.k, self.cohort_fp)


def node_guard(state: NodeState, policy: UsagePolicy, assignment: TaskAssignment,
               k: int) -> ReleaseGuard | None:
    """The guard for one task on a node, or None when the policy turns the defence off.

    Refusals are entries in the node's audit ledger (``differencing.refused``).
    """
    if policy.differencing == "off":
        return None
    key = (assignment.study_id, assignment.round, assignment.task_id)
    consumer = consumer_key(assignment)

    def log_refusal(exc: NearDuplicateRelease) -> None:
        audit.record(state, "differencing.refused", audit.task_subject(*key),
                     {"consumer": consumer, "earlier_studies": exc.earlier_studies,
                      "min_cell_size": k})

    memory = ReleaseMemory.for_state(state, policy.differencing_retention_days)
    return ReleaseGuard(memory, consumer, key, k, fingerprint(assignment.cohort), log_refusal)
