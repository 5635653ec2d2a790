"""The hub's ledger writer waits out a locked database instead of dropping entries, and signs
the head about once a second however busy the hub is."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from hubkit import START
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from healthspace.core.clock import FixedClock
from healthspace.hub.bootstrap import init_hub
from healthspace.hub.db.session import make_engine, make_sessionmaker
from healthspace.hub.services import hub_keys
from healthspace.hub.services.audit import CHECKPOINT_S, AuditTrail
from healthspace.ledger.verify import verify


def _trail(path: Path, url: str) -> tuple[AuditTrail, Engine, sessionmaker[Session]]:
    init_hub(f"sqlite:///{path}", clock=FixedClock(START))
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)

    def key():  # type: ignore[no-untyped-def]
        with sessions() as session:
            return hub_keys.signing_key(session)

    return AuditTrail(engine, key, FixedClock(START)), engine, sessions


def test_entries_committed_while_the_store_is_locked_all_reach_the_ledger(
        tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    # the writer's own attempts give up after 0.2 s
    trail, engine, sessions = _trail(path, f"sqlite:///{path}?timeout=0.2")
    trail.record("hub", "test.before", "thing:0")
    trail.flush()
    before = trail.store.count()

    blocker = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 1.5 s
    release = threading.Timer(1.5, lambda: blocker.execute("COMMIT"))
    release.start()
    for i in range(1, 21):
        trail.record("hub", "test.locked", f"thing:{i}", {"i": i})
    time.sleep(0.6)  # several attempts fail while the lock is held (readers still read)
    assert release.is_alive() and trail.store.count() == before
    trail.flush(timeout=30)
    release.join()
    blocker.close()

    entries = list(trail.store.entries(before + 1))
    assert [e.subject for e in entries] == [f"thing:{i}" for i in range(1, 21)]
    with sessions() as session:
        public = hub_keys.public_info(session)["public_key"]
    report = verify(trail.store, {public})
    assert report.ok, report.problem
    assert report.entries == before + 20
    engine.dispose()


def test_a_busy_hub_signs_about_once_a_second_and_a_quiet_one_signs_its_head(
        tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    trail, engine, sessions = _trail(path, f"sqlite:///{path}")
    started = time.monotonic()
    recorded = 0
    while time.monotonic() - started < 2.5:  # a commit every 10 ms: ~50 writer batches
        recorded += 1
        trail.record("hub", "test.busy", f"thing:{recorded}")
        time.sleep(0.01)
    busy = time.monotonic() - started
    time.sleep(CHECKPOINT_S + 1.0)  # no flush: the idle writer signs what it appended
    checkpoints = list(trail.store.checkpoints())
    assert recorded > 100 and trail.store.count() == recorded + 1  # + the hub's own init
    # init's own, then one a second from the first batch on, then the quiet head (not ~50)
    assert 3 <= len(checkpoints) <= busy / CHECKPOINT_S + 3, len(checkpoints)
    assert checkpoints[-1].size == trail.store.count()  # the head is signed
    with sessions() as session:
        public = hub_keys.public_info(session)["public_key"]
    assert verify(trail.store, {public}).ok
    engine.dispose()
