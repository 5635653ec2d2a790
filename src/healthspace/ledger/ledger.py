"""The ledger service: append entries, checkpoint every N and at the head, prove inclusion."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from healthspace.core.clock import Clock, SystemClock, iso
from healthspace.ledger.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from healthspace.ledger.entry import GENESIS_HASH, Entry, make_entry, payload_digest
from healthspace.ledger.merkle import Frontier, inclusion_proof, verify_inclusion
from healthspace.ledger.store import LedgerConflict, LedgerStore

APPEND_RETRIES = 20
# Merkle frontiers by store location, so a short-lived Ledger (one per request or record) does
# not re-read the whole ledger to sign a checkpoint; reused only if the head entry still matches.
_FRONTIERS: dict[str, Frontier] = {}


def _cached_frontier(store: LedgerStore) -> Frontier:
    cached = _FRONTIERS.get(store.location)
    if cached is None or cached.last is None:
        return Frontier()
    entry = store.entry(cached.size)
    if entry is None or entry.hash != cached.last.hex():
        return Frontier()
    return cached.copy()


@dataclass(frozen=True)
class InclusionProof:
    """Entry ``seq`` (leaf ``seq - 1``, leaf data = its hash) is in ``checkpoint``'s tree."""

    seq: int
    entry_hash: str
    checkpoint: Checkpoint
    path: list[str] = field(default_factory=list)

    def verify(self, trusted_keys: Collection[str]) -> bool:
        cp = self.checkpoint
        if verify_checkpoint(cp, trusted_keys) is not None:
            return False
        return verify_inclusion(
            bytes.fromhex(self.entry_hash), self.seq - 1, cp.size,
            [bytes.fromhex(p) for p in self.path], bytes.fromhex(cp.root),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "entry_hash": self.entry_hash,
                "checkpoint": self.checkpoint.to_dict(), "path": self.path}


class Ledger:
    """One owner's ledger over any LedgerStore; safe with several writers on one store."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        owner: str,
        signing_key: SigningKey,
        checkpoint_every: int = 1000,
        clock: Clock | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.store = store
        self.owner = owner
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
        self.clock = clock or SystemClock()
        self._frontier: Frontier | None = None  # built lazily: only checkpoints need it
        self._head: tuple[int, str] | None = None  # (seq, hash) we last saw; may be stale

    def append(
        self, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None
    ) -> Entry:
        """Append one entry (retrying if another writer got the seq first)."""
        digest = payload_digest(payload)
        for _ in range(APPEND_RETRIES):
            if self._head is None:
                last = self.store.last_entry()
                self._head = (last.seq, last.hash) if last else (0, GENESIS_HASH)
            seq, prev = self._head[0] + 1, self._head[1]
            entry = make_entry(seq, iso(self.clock.now()), actor, action, subject, digest, prev)
            try:
                self.store.append_entry(entry)
            except LedgerConflict:
                self._head = None  # another writer moved the head: re-read it
                continue
            self._head = (seq, entry.hash)
            if seq % self.checkpoint_every == 0:
                self.checkpoint()
            return entry
        raise LedgerConflict(f"could not append after {APPEND_RETRIES} concurrent retries")

    def append_all(self, items: Sequence[tuple[str, str, str, dict[str, Any] | None]]
                   ) -> list[Entry]:
        """Append ``(actor, action, subject, payload)`` items in order, in one store write
        (one transaction, one fsync) instead of one per entry; retried whole if another
        writer moved the head. Checkpoints due inside the run are signed at its end."""
        if not items:
            return []
        digests = [payload_digest(payload) for *_, payload in items]
        for _ in range(APPEND_RETRIES):
            if self._head is None:
                last = self.store.last_entry()
                self._head = (last.seq, last.hash) if last else (0, GENESIS_HASH)
            seq, prev = self._head
            stamp = iso(self.clock.now())
            run: list[Entry] = []
            for (actor, action, subject, _), digest in zip(items, digests, strict=True):
                entry = make_entry(seq + 1, stamp, actor, action, subject, digest, prev)
                run.append(entry)
                seq, prev = entry.seq, entry.hash
            try:
                self.store.append_many(run)
            except LedgerConflict:
                self._head = None
                continue
            first = run[0].seq
            self._head = (seq, prev)
            if seq // self.checkpoint_every > (first - 1) // self.checkpoint_every:
                self.checkpoint()
            return run
        raise LedgerConflict(f"could not append after {APPEND_RETRIES} concurrent retries")

    def _sync(self) -> Frontier:
        """The Merkle frontier at the store's head, reading only entries not yet folded in."""
        if self._frontier is None:
            self._frontier = _cached_frontier(self.store)
        frontier = self._frontier
        for entry in self.store.entries(frontier.size + 1):
            frontier.append(bytes.fromhex(entry.hash))
        _FRONTIERS[self.store.location] = frontier.copy()
        return frontier

    def checkpoint(self) -> Checkpoint:
        """Sign the tree head at the current head; returns the latest if it already covers it."""
        latest = self.store.latest_checkpoint()
        frontier = self._sync()
        if latest is not None and latest.size >= frontier.size:
            return latest
        cp = sign_checkpoint(
            self.signing_key, self.owner, frontier.size, frontier.root().hex(),
            iso(self.clock.now()),
        )
        try:
            self.store.add_checkpoint(cp)
        except LedgerConflict:  # another writer signed this size first
            return self.store.latest_checkpoint() or cp
        return cp

    def proof(self, seq: int) -> InclusionProof:
        """An inclusion proof of entry ``seq`` against the latest checkpoint (made if needed)."""
        entry = self.store.entry(seq)
        if entry is None:
            raise LookupError(f"no ledger entry {seq}")
        cp = self.store.latest_checkpoint()
        if cp is None or cp.size < seq:
            cp = self.checkpoint()
        leaves = [bytes.fromhex(e.hash) for e in self.store.entries(1, cp.size + 1)]
        path = [p.hex() for p in inclusion_proof(seq - 1, leaves)]
        return InclusionProof(seq, entry.hash, cp, path)
