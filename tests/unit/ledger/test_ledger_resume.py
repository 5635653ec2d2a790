"""A resumed verification (``verify_from`` with a previous pass's progress) walks only what
was appended, reports exactly what a full pass reports, and catches tampering among the new
entries; edits before the resume point are a full pass's to find."""

from __future__ import annotations

from ledgerkit import KEY, Backend, make_ledger

from healthspace.ledger.checkpoint import key_id
from healthspace.ledger.verify import verify, verify_from

TRUSTED = [key_id(KEY)]


def _fill(ledger, start: int, n: int) -> None:
    for i in range(start, start + n):
        ledger.append(f"user:{i % 3}", "task.result", f"study:{i}/round:1", {"i": i})


def test_a_resumed_pass_reports_what_a_full_pass_does(backend: Backend) -> None:
    store = backend.store()
    ledger = make_ledger(store, every=10)
    _fill(ledger, 0, 25)
    first, progress = verify_from(store, TRUSTED)
    assert first.ok and progress is not None and progress.seq == 25
    _fill(ledger, 25, 17)  # a checkpoint at 30 and 40 among the new entries
    walked = []
    entries = store.entries
    store.entries = lambda start=1, stop=None: (walked.append(start), entries(start, stop))[1]
    resumed, later = verify_from(store, TRUSTED, progress)
    assert walked == [26]  # only the new entries were read
    store.entries = entries
    assert resumed == verify(store, TRUSTED)
    assert resumed.ok and resumed.entries == 42 and later is not None and later.seq == 42
    again, _ = verify_from(store, TRUSTED, later)  # nothing new: nothing walked, still ok
    assert again == resumed


def test_tampering_after_the_resume_point_is_caught(backend: Backend) -> None:
    store = backend.store()
    ledger = make_ledger(store, every=10)
    _fill(ledger, 0, 12)
    _, progress = verify_from(store, TRUSTED)
    _fill(ledger, 12, 10)
    backend.sql("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 15")
    report, after = verify_from(store, TRUSTED, progress)
    assert not report.ok and report.first_bad_seq == 15 and after is None
    assert "edited" in (report.problem or "")


def test_an_edit_before_the_resume_point_needs_a_full_pass(backend: Backend) -> None:
    store = backend.store()
    ledger = make_ledger(store, every=10)
    _fill(ledger, 0, 20)
    _, progress = verify_from(store, TRUSTED)
    backend.sql("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 5")
    resumed, _ = verify_from(store, TRUSTED, progress)
    assert resumed.ok  # by design: the resumed pass does not walk 1..20 again
    full = verify(store, TRUSTED)
    assert not full.ok and full.first_bad_seq == 5


def test_a_forged_signature_on_a_new_checkpoint_is_caught(backend: Backend) -> None:
    store = backend.store()
    ledger = make_ledger(store, every=10)
    _fill(ledger, 0, 12)
    _, progress = verify_from(store, TRUSTED)
    _fill(ledger, 12, 10)  # a checkpoint at 20 among the new entries
    sig = str(backend.rows("SELECT signature FROM ledger_checkpoints WHERE size = 20")[0][0])
    flipped = ("1" if sig[0] == "0" else "0") + sig[1:]
    backend.sql("UPDATE ledger_checkpoints SET signature = ? WHERE size = 20", (flipped,))
    report, after = verify_from(store, TRUSTED, progress)
    assert not report.ok and report.bad_checkpoint == 20 and after is None
    assert report == verify(store, TRUSTED)
