"""Full ledger verification in one streaming pass: hash chain, Merkle roots, signatures."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from healthspace.ledger.checkpoint import Checkpoint, verify_checkpoint
from healthspace.ledger.entry import GENESIS_HASH, entry_hash
from healthspace.ledger.merkle import Frontier
from healthspace.ledger.store import LedgerStore


@dataclass(frozen=True)
class VerifyReport:
    """The outcome; ``warning`` (e.g. an unsigned tail) never makes ``ok`` false."""

    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None
    bad_checkpoint: int | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Bad(Exception):
    def __init__(self, seq: int, problem: str, checkpoint: int | None = None) -> None:
        super().__init__(problem)
        self.seq, self.problem, self.checkpoint = seq, problem, checkpoint


def _static_checks(
    cps: list[Checkpoint], trusted_keys: Collection[str], ledger_id: str | None
) -> dict[int, str]:
    """Signature and identity problems of each checkpoint, keyed by its size."""
    owner = ledger_id if ledger_id is not None else (cps[0].ledger_id if cps else None)
    problems: dict[int, str] = {}
    for cp in cps:
        reason = verify_checkpoint(cp, trusted_keys)
        if reason is None and cp.ledger_id != owner:
            reason = f"checkpoint at size {cp.size} is for ledger {cp.ledger_id!r}, not {owner!r}"
        if reason is not None and cp.size not in problems:
            problems[cp.size] = reason
    return problems


def _check_roots(cps: list[Checkpoint], root: bytes, good_size: int) -> None:
    hex_root = root.hex()
    for cp in cps:
        if cp.root.lower() != hex_root:
            raise _Bad(
                good_size + 1,
                f"checkpoint at size {cp.size}: Merkle root does not match entries 1..{cp.size}",
                cp.size,
            )


@dataclass(frozen=True)
class Progress:
    """Where a successful pass stopped: the head it verified (its hash, and the one before
    it), the Merkle frontier there and the checkpoint sizes it matched, so a later pass can
    verify only what was appended since (see :func:`verify_from`)."""

    seq: int = 0
    prev: str = GENESIS_HASH
    prev2: str = ""
    frontier: Frontier = field(default_factory=Frontier)
    good: int = 0  # size of the last checkpoint matched
    checked: frozenset[int] = frozenset()


class _Restart(Exception):
    """A checkpoint for entries a resumed pass did not walk again: walk them all."""


def _scan(store: LedgerStore, by_size: dict[int, list[Checkpoint]], sig: dict[int, str],
          start: Progress) -> Progress:
    """Walk every entry after ``start`` once; raise _Bad at the first problem; return where
    the walk ended."""
    frontier = start.frontier.copy()  # ``start`` stays as it was if this pass fails
    good = start.good
    checked = set(start.checked)
    for size in by_size:
        if size < start.seq and size not in checked:
            raise _Restart

    def at_checkpoint(size: int) -> None:
        nonlocal good
        if size in sig:
            raise _Bad(good + 1, sig[size], size)
        _check_roots(by_size[size], frontier.root(), good)
        good = size
        checked.add(size)

    if start.seq in by_size and start.seq not in checked:
        at_checkpoint(start.seq)
    seq, prev, prev2 = start.seq, start.prev, start.prev2
    for e in store.entries(start.seq + 1):
        seq += 1
        if e.seq != seq:
            raise _Bad(seq, f"entry {seq} is missing (next stored entry is {e.seq})")
        if e.prev_hash != prev:
            if e.prev_hash == prev2:  # links over its predecessor: that one was slipped in
                raise _Bad(seq - 1, f"entry {seq - 1} was inserted: entry {seq} links to "
                                    f"entry {seq - 2}")
            raise _Bad(seq, f"entry {seq}: prev_hash does not match entry {seq - 1}'s hash "
                            "(reordered, deleted or inserted)")
        h = entry_hash(seq, e.time, e.actor, e.action, e.subject, e.payload_digest, prev)
        if h != e.hash:
            raise _Bad(seq, f"entry {seq}: hash does not match its fields (edited)")
        frontier.append(bytes.fromhex(h))
        if seq in by_size:
            at_checkpoint(seq)
        prev, prev2 = h, prev
    beyond = [size for size in by_size if size > seq]
    if beyond:
        raise _Bad(seq + 1, f"truncated: checkpoint at size {max(beyond)} but only {seq} entries",
                   max(beyond))
    return Progress(seq, prev, prev2, frontier, good, frozenset(checked))


def verify(
    store: LedgerStore,
    trusted_keys: Collection[str],
    *,
    ledger_id: str | None = None,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> VerifyReport:
    """Verify everything in ``store``; ``extra_checkpoints`` (e.g. copies published to the hub)
    are held to the same entries, which catches truncation of entries and checkpoints together."""
    return verify_from(store, trusted_keys, ledger_id=ledger_id,
                       extra_checkpoints=extra_checkpoints)[0]


def verify_from(
    store: LedgerStore,
    trusted_keys: Collection[str],
    resume: Progress | None = None,
    *,
    ledger_id: str | None = None,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> tuple[VerifyReport, Progress | None]:
    """As :func:`verify`, and where the pass ended (None if it failed). With ``resume`` (a
    previous pass's progress over the same store) only the entries appended since are
    walked and only new checkpoints' signatures checked; a checkpoint over entries before
    ``resume`` that it never matched makes it walk everything again. Entries edited
    *before* ``resume`` are not seen by a resumed pass: a full pass (no ``resume``) is what
    re-checks the whole history."""
    cps = sorted([*store.checkpoints(), *extra_checkpoints], key=lambda cp: cp.size)
    by_size: dict[int, list[Checkpoint]] = {}
    for cp in cps:
        by_size.setdefault(cp.size, []).append(cp)
    owner = ledger_id if ledger_id is not None else (cps[0].ledger_id if cps else None)
    # a resumed pass signature-checks only the checkpoints the previous pass did not match
    seen = resume.checked if resume is not None else frozenset()
    sig = _static_checks([cp for cp in cps if cp.size not in seen], trusted_keys, owner)
    try:
        try:
            progress = _scan(store, by_size, sig, resume or Progress())
        except _Restart:
            sig = _static_checks(cps, trusted_keys, owner)
            progress = _scan(store, by_size, sig, Progress())
    except _Bad as bad:
        return VerifyReport(False, store.count(), len(cps), bad.seq, bad.problem,
                            bad.checkpoint), None
    head = progress.seq
    covered = cps[-1].size if cps else 0
    warning = None
    if covered < head:
        warning = f"head not checkpointed: entries {covered + 1}..{head} are only hash-chained"
    return VerifyReport(True, head, len(cps), warning=warning), progress
