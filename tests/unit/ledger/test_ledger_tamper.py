"""Tampering with the database underneath either backend is caught, at the right entry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ledgerkit import FOREIGN_KEY, KEY, Backend, make_ledger

from healthspace.ledger.checkpoint import Checkpoint, key_id, sign_checkpoint
from healthspace.ledger.entry import entry_hash, make_entry
from healthspace.ledger.ledger import Ledger
from healthspace.ledger.store import LedgerStore
from healthspace.ledger.verify import verify

TRUSTED = [key_id(KEY)]
COLUMNS = "seq, time, actor, action, subject, payload_digest, prev_hash, hash"


@pytest.fixture
def built(backend: Backend) -> tuple[Backend, LedgerStore, Ledger]:
    """30 entries with signed checkpoints at 10, 20 and 30 (the head)."""
    store = backend.store()
    ledger = make_ledger(store, every=10)
    for i in range(30):
        ledger.append(f"user:{i % 4}", "task.result", f"study:{i}/round:1/task:{i}", {"i": i})
    assert verify(store, TRUSTED).ok
    return backend, store, ledger


def _hash(b: Backend, seq: int) -> str:
    return str(b.rows("SELECT hash FROM ledger_entries WHERE seq = ?", (seq,))[0][0])


def _swap(b: Backend) -> None:
    b.sql("UPDATE ledger_entries SET seq = -5 WHERE seq = 5")
    b.sql("UPDATE ledger_entries SET seq = 5 WHERE seq = 6")
    b.sql("UPDATE ledger_entries SET seq = 6 WHERE seq = -5")


def _insert_forged(b: Backend) -> None:
    """Shift 16..30 up one and slip a correctly hashed, correctly linked entry in at 16."""
    b.sql("UPDATE ledger_entries SET seq = seq + 1000 WHERE seq >= 16")
    b.sql("UPDATE ledger_entries SET seq = seq - 999 WHERE seq >= 1016")
    e = make_entry(16, "2026-01-01T09:00:16Z", "mallory", "task.result", "study:9/round:1/task:9",
                   "0" * 64, _hash(b, 15))
    b.sql(f"INSERT INTO ledger_entries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
          tuple(e.to_dict().values()))


def _append_forged(b: Backend) -> None:
    b.sql(f"INSERT INTO ledger_entries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
          (31, "2026-01-01T10:00:00Z", "mallory", "x", "y", "0" * 64, _hash(b, 30), "f" * 64))


def _rewrite_history(b: Backend) -> None:
    """Edit entry 15 and recompute every hash after it: the chain is whole, the roots are not."""
    rows = b.rows(f"SELECT {COLUMNS} FROM ledger_entries WHERE seq >= 15 ORDER BY seq")
    prev = _hash(b, 14)
    for seq, time, actor, action, subject, digest, _prev, _h in rows:
        actor = "mallory" if seq == 15 else actor
        h = entry_hash(seq, time, actor, action, subject, digest, prev)
        b.sql("UPDATE ledger_entries SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
              (actor, prev, h, seq))
        prev = h


def _resign_foreign(b: Backend) -> None:
    root, time = b.rows("SELECT root, time FROM ledger_checkpoints WHERE size = 20")[0]
    cp = sign_checkpoint(FOREIGN_KEY, "test-owner", 20, root, time)
    b.sql("UPDATE ledger_checkpoints SET key_id = ?, signature = ? WHERE size = 20",
          (cp.key_id, cp.signature))


def _flip_signature(b: Backend) -> None:
    sig = str(b.rows("SELECT signature FROM ledger_checkpoints WHERE size = 20")[0][0])
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    b.sql("UPDATE ledger_checkpoints SET signature = ? WHERE size = 20", (flipped,))


TAMPERS: dict[str, tuple[Callable[[Backend], None], int, int | None, str]] = {
    # name: (tamper, first_bad_seq, bad checkpoint size, words in the problem)
    "edit actor": (lambda b: b.sql(
        "UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 15"), 15, None, "edited"),
    "edit payload_digest": (lambda b: b.sql(
        "UPDATE ledger_entries SET payload_digest = ? WHERE seq = 7", ("a" * 64,)),
        7, None, "edited"),
    "edit time": (lambda b: b.sql(
        "UPDATE ledger_entries SET time = '2020-01-01T00:00:00Z' WHERE seq = 22"),
        22, None, "edited"),
    "delete middle": (lambda b: b.sql("DELETE FROM ledger_entries WHERE seq = 12"),
                      12, None, "missing"),
    "truncate below checkpoint": (lambda b: b.sql("DELETE FROM ledger_entries WHERE seq > 25"),
                                  26, 30, "truncated"),
    "reorder (swap seq)": (_swap, 5, None, "prev_hash"),
    "insert forged row": (_insert_forged, 16, None, "inserted"),
    "append forged row": (_append_forged, 31, None, "edited"),
    "rewrite history": (_rewrite_history, 11, 20, "Merkle root"),
    "re-sign with foreign key": (_resign_foreign, 11, 20, "untrusted key"),
    "edit checkpoint root": (lambda b: b.sql(
        "UPDATE ledger_checkpoints SET root = ? WHERE size = 20", ("0" * 64,)),
        11, 20, "invalid signature"),
    "edit checkpoint signature": (_flip_signature, 11, 20, "invalid signature"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tamper_is_detected(built: tuple[Backend, LedgerStore, Ledger], name: str) -> None:
    backend, store, _ = built
    tamper, first_bad, bad_cp, words = TAMPERS[name]
    tamper(backend)
    report = verify(store, TRUSTED)
    assert not report.ok
    assert report.first_bad_seq == first_bad, report
    assert report.bad_checkpoint == bad_cp, report
    assert report.problem is not None and words in report.problem, report


def test_foreign_signer_for_the_whole_ledger(built: tuple[Backend, LedgerStore, Ledger]) -> None:
    _, store, _ = built
    report = verify(store, [key_id(FOREIGN_KEY)])
    assert (report.ok, report.first_bad_seq, report.bad_checkpoint) == (False, 1, 10)


def test_truncating_checkpoints_too_needs_the_published_copy(
    built: tuple[Backend, LedgerStore, Ledger],
) -> None:
    backend, store, _ = built
    published = store.latest_checkpoint()
    assert published is not None and published.size == 30
    backend.sql("DELETE FROM ledger_entries WHERE seq > 20")
    backend.sql("DELETE FROM ledger_checkpoints WHERE size > 20")
    assert verify(store, TRUSTED).ok  # locally indistinguishable from a shorter ledger
    report = verify(store, TRUSTED, extra_checkpoints=[Checkpoint.from_dict(published.to_dict())])
    assert (report.ok, report.first_bad_seq, report.bad_checkpoint) == (False, 21, 30)


def test_forged_tail_after_the_last_checkpoint_is_flagged(
    built: tuple[Backend, LedgerStore, Ledger],
) -> None:
    backend, store, _ = built
    e = make_entry(31, "2026-01-01T10:00:00Z", "mallory", "x", "y", "0" * 64, _hash(backend, 30))
    backend.sql(f"INSERT INTO ledger_entries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(e.to_dict().values()))
    report = verify(store, TRUSTED)
    # A correctly hashed tail is only as good as the next checkpoint: verify warns, not fails.
    assert report.ok and report.warning is not None and "31..31" in report.warning
