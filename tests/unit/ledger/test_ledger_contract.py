"""One contract for every LedgerStore backend: append, read, checkpoints, proofs, concurrency."""

from __future__ import annotations

import threading

import pytest
from ledgerkit import KEY, Backend, make_ledger

from healthspace.ledger.checkpoint import key_id, signature_valid
from healthspace.ledger.entry import GENESIS_HASH, Entry, make_entry, payload_digest
from healthspace.ledger.ledger import Ledger
from healthspace.ledger.store import LedgerConflict, LedgerStore
from healthspace.ledger.verify import verify

TRUSTED = [key_id(KEY)]


def fill(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.append(f"user:{i % 3}", "study.submit", f"study:{i}", {"i": i, "name": "Zoë"})


def test_append_and_read(ledger: Ledger, store: LedgerStore) -> None:
    assert store.last_entry() is None and store.count() == 0
    first = ledger.append("user:ana", "study.submit", "study:1", {"b": 1, "a": [1, 2]})
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH
    assert first.payload_digest == payload_digest({"a": [1, 2], "b": 1})
    assert first.time.endswith("Z")
    fill(ledger, 24)
    assert store.count() == 25
    last = store.last_entry()
    assert last is not None and last.seq == 25
    assert store.entry(1) == first and store.entry(26) is None
    assert [e.seq for e in store.entries()] == list(range(1, 26))
    assert [e.seq for e in store.entries(5, 8)] == [5, 6, 7]
    entries = list(store.entries())
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))


def test_store_rejects_appends_that_do_not_extend_the_head(
    ledger: Ledger, store: LedgerStore
) -> None:
    def entry(seq: int, prev: str) -> Entry:
        return make_entry(seq, "2026-01-01T00:00:00Z", "a", "x", "s", payload_digest(None), prev)

    with pytest.raises(LedgerConflict):
        store.append_entry(entry(2, GENESIS_HASH))  # the first entry must be seq 1
    fill(ledger, 3)
    head = store.last_entry()
    assert head is not None
    for bad in (entry(5, head.hash), entry(3, head.hash), entry(4, GENESIS_HASH)):
        with pytest.raises(LedgerConflict):
            store.append_entry(bad)
    good = entry(4, head.hash)
    forged = Entry(**{**good.to_dict(), "hash": "f" * 64})
    with pytest.raises(LedgerConflict):
        store.append_entry(forged)
    # append_many is all or nothing
    run = [entry(4, head.hash)]
    run.append(entry(5, run[0].hash))
    run.append(entry(7, run[1].hash))
    with pytest.raises(LedgerConflict):
        store.append_many(run)
    assert store.count() == 3
    assert store.append_many(run[:2]) == 2
    assert store.count() == 5
    assert verify(store, TRUSTED).ok


def test_checkpoints_every_n_and_at_the_head(ledger: Ledger, store: LedgerStore) -> None:
    fill(ledger, 25)
    assert [cp.size for cp in store.checkpoints()] == [10, 20]
    report = verify(store, TRUSTED)
    assert report.ok and report.warning and "head not checkpointed" in report.warning
    head = ledger.checkpoint()
    assert head.size == 25 and head.ledger_id == "test-owner" and signature_valid(head)
    assert ledger.checkpoint() == head  # already covered: no new checkpoint
    assert store.latest_checkpoint() == head
    assert [cp.size for cp in store.checkpoints()] == [10, 20, 25]
    with pytest.raises(LedgerConflict):
        store.add_checkpoint(head)
    report = verify(store, TRUSTED)
    assert report.ok and report.warning is None
    assert (report.entries, report.checkpoints) == (25, 3)


def test_empty_ledger_verifies(store: LedgerStore) -> None:
    report = verify(store, TRUSTED)
    assert report.ok and report.entries == 0 and report.warning is None


def test_inclusion_proofs(ledger: Ledger, store: LedgerStore) -> None:
    fill(ledger, 23)
    for seq in range(1, 24):
        proof = ledger.proof(seq)
        assert proof.checkpoint.size >= seq
        assert proof.verify(TRUSTED)
        assert not proof.verify(["00" * 32])
    proof = ledger.proof(7)
    assert proof.checkpoint.size == 23  # the latest checkpoint, made at the head on demand
    wrong_leaf = type(proof)(proof.seq, "0" * 64, proof.checkpoint, proof.path)
    assert not wrong_leaf.verify(TRUSTED)
    bent = type(proof)(proof.seq, proof.entry_hash, proof.checkpoint, proof.path[::-1])
    assert not bent.verify(TRUSTED)
    with pytest.raises(LookupError):
        ledger.proof(99)


def test_concurrent_writers_never_fork(backend: Backend) -> None:
    ledgers = [make_ledger(backend.store(), every=7) for _ in range(3)]
    errors: list[BaseException] = []

    def work(ledger: Ledger) -> None:
        try:
            fill(ledger, 20)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(led,)) for led in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store = backend.store()
    assert store.count() == 60
    report = verify(store, TRUSTED)
    assert report.ok, report


def test_short_lived_ledgers_checkpoint_every_record(backend: Backend) -> None:
    """One Ledger per record (as a request handler or CLI would): the head is always signed."""
    for i in range(12):
        ledger = make_ledger(backend.store(), every=5)
        ledger.append("node:h1", "task.run", f"study:1/round:1/task:{i}")
        ledger.checkpoint()
    store = backend.store()
    assert [cp.size for cp in store.checkpoints()] == list(range(1, 13))
    report = verify(store, TRUSTED)
    assert report.ok and report.warning is None, report


def test_batched_appends_chain_like_single_ones_and_survive_concurrent_writers(
        backend: Backend) -> None:
    batcher, single = make_ledger(backend.store(), every=10), make_ledger(backend.store(), every=10)
    items = [("hub", "task.result", f"task:{i}", {"i": i}) for i in range(12)]
    run = batcher.append_all(items[:7])
    assert [e.seq for e in run] == list(range(1, 8))
    single.append("hub", "study.submit", "study:1", {})  # moves the head under the batcher
    run = batcher.append_all(items[7:])  # stale head: re-read, then written whole
    assert [e.seq for e in run] == list(range(9, 14))
    assert batcher.append_all([]) == []
    store = backend.store()
    assert [e.subject for e in store.entries()] == (
        [f"task:{i}" for i in range(7)] + ["study:1"] + [f"task:{i}" for i in range(7, 12)])
    assert [cp.size for cp in store.checkpoints()] == [13]  # the run crossing 10 signed its end
    report = verify(store, TRUSTED)
    assert report.ok and report.entries == 13, report
