"""The ledger storage contract every backend meets, and the append rule they all enforce."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from healthspace.core.errors import Conflict
from healthspace.ledger.checkpoint import Checkpoint
from healthspace.ledger.entry import Entry, expected_hash


class LedgerConflict(Conflict):
    """An append that does not extend the current head (lost a race or forged)."""


class LedgerStore(Protocol):
    """Append-only storage of entries (in seq order, 1, 2, 3, …) and their checkpoints."""

    @property
    def location(self) -> str:
        """Names the database and tables holding this ledger (same ledger, same string)."""
        ...

    def append_entry(self, entry: Entry) -> None:
        """Store ``entry`` if it is the next (seq, prev_hash, hash), else raise LedgerConflict."""
        ...

    def append_many(self, entries: Iterable[Entry]) -> int:
        """Append a run of entries in one transaction (all or none); returns how many."""
        ...

    def last_entry(self) -> Entry | None: ...

    def entry(self, seq: int) -> Entry | None: ...

    def entries(self, start: int = 1, stop: int | None = None) -> Iterator[Entry]:
        """Entries with ``start <= seq < stop`` (to the end if ``stop`` is None), in seq order."""
        ...

    def count(self) -> int: ...

    def add_checkpoint(self, cp: Checkpoint) -> None:
        """Store a checkpoint; one per size (a duplicate size raises LedgerConflict)."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """All checkpoints by increasing size."""
        ...

    def latest_checkpoint(self) -> Checkpoint | None: ...


def check_next(last_seq: int, last_hash: str, entry: Entry) -> None:
    """Raise LedgerConflict unless ``entry`` extends a head at (``last_seq``, ``last_hash``)."""
    if entry.seq != last_seq + 1:
        raise LedgerConflict(f"entry seq {entry.seq} does not follow head seq {last_seq}")
    if entry.prev_hash != last_hash:
        raise LedgerConflict(f"entry seq {entry.seq} prev_hash does not match the head's hash")
    if entry.hash != expected_hash(entry):
        raise LedgerConflict(f"entry seq {entry.seq} hash does not match its fields")


def check_run(seq: int, prev: str, entries: Iterable[Entry]) -> list[Entry]:
    """Check a run of entries extends a head at (``seq``, ``prev``); returns them as a list."""
    run = []
    for entry in entries:
        check_next(seq, prev, entry)
        seq, prev = entry.seq, entry.hash
        run.append(entry)
    return run
