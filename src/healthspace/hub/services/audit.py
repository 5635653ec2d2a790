"""The hub's audit ledger: one service, fed from the session's after-commit interceptor.

Services *queue* an entry on the SQLAlchemy session with :func:`queue`; the entries are handed
to the ledger (``healthspace.ledger``) only after that unit of work commits, so a rolled-back
change is never recorded. In the running hub a writer thread appends them in order (gathering
for :data:`GATHER_S` first) and signs a checkpoint at the head at most every
:data:`CHECKPOINT_S` — at once when nothing was signed for that long, else when that much time
has passed — so ledger I/O and signatures stay off the request path and a busy hub signs about
once a second, not once per burst. Readers of the ledger API call :meth:`AuditTrail.flush`
first, which also signs the head. A hub process killed between a commit and the writer's
append can lose those last entries (the last ~50 ms of work); ``synchronous=True`` (used by
one-shot commands) appends and signs in the caller.
"""

from __future__ import annotations

import contextlib
import logging
import queue as queues
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey
from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from healthspace.core.clock import Clock
from healthspace.hub.db.session import StoreBusy
from healthspace.ledger.entry import Entry, payload_digest
from healthspace.ledger.ledger import InclusionProof, Ledger
from healthspace.ledger.sqla_store import SqlAlchemyLedgerStore

log = logging.getLogger(__name__)
_QUEUE = "healthspace.audit"
HUB_LEDGER = "hub"


def queue(
    session: Session, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None
) -> None:
    """Record ``action`` on ``subject`` by ``actor`` once the session's transaction commits."""
    session.info.setdefault(_QUEUE, []).append((actor, action, subject, payload or {}))


def task_subject(study_id: int, round: int, task_id: int) -> str:
    """Shared with the node ledger, so ``healthspace audit crosscheck`` can pair executions."""
    return f"study:{study_id}/round:{round}/task:{task_id}"


Item = tuple[str, str, str, dict[str, Any]]

# How long the writer keeps retrying a failing ledger store before it logs the entries as
# lost (the hub's own requests answer 503 long before: the busy bound is seconds).
RETRY_FOR = 300.0
# The writer waits this long after the first waiting entry before it drains the queue, so a
# busy hub appends (and signs a checkpoint) once per burst, not once per commit.
GATHER_S = 0.05
# The newest entries are under a signed checkpoint within about this many seconds (every
# entry is hash-chained at once; the checkpoint signs the Merkle root over all of them).
CHECKPOINT_S = 1.0
_STORE_ERRORS = (SQLAlchemyError, StoreBusy)


@dataclass
class _Progress:
    """How far one batch got: items appended, and the store's head seq after the last one."""

    written: int = 0
    head: int | None = None

    def settle(self, last: Entry | None, items: list[Item]) -> None:
        """Count the run whose append raised if the store holds it after all (the commit went
        through and only its acknowledgement was lost): its last entry is the store's head."""
        if last is None or self.head is None or self.written >= len(items):
            return
        actor, action, subject, payload = items[-1]
        if (last.seq == self.head + len(items) - self.written
                and (last.actor, last.action, last.subject) == (actor, action, subject)
                and last.payload_digest == payload_digest(payload)):
            self.written, self.head = len(items), last.seq


class AuditTrail:
    """Appends committed entries in order; checkpoints the head after each drained batch."""

    def __init__(
        self,
        engine: Engine,
        signing_key: Callable[[], SigningKey],
        clock: Clock,
        *,
        synchronous: bool = False,
    ) -> None:
        self.store = SqlAlchemyLedgerStore(engine)
        self.signing_key = signing_key
        self.clock = clock
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._pending: queues.Queue[list[Item]] = queues.Queue()
        self._writer: threading.Thread | None = None
        self._unsigned = False  # entries appended since the last checkpoint
        self._signed_at = -CHECKPOINT_S  # monotonic time of the last checkpoint

    def _current(self, *, key_check: bool = True) -> Ledger:
        """The ledger; the hub key is re-read for every checkpoint (a key rotated by another
        process signs the next one), not for every append."""
        if self._ledger is not None and not key_check:
            return self._ledger
        key = self.signing_key()
        if self._ledger is None or self._ledger.signing_key.encode() != key.encode():
            self._ledger = Ledger(self.store, owner=HUB_LEDGER, signing_key=key,
                                  checkpoint_every=1000, clock=self.clock)
        return self._ledger

    def _sign(self) -> None:
        """Checkpoint the head now (the caller holds the ledger lock)."""
        self._current().checkpoint()
        self._unsigned, self._signed_at = False, time.monotonic()

    def append(self, entries: list[Item]) -> None:
        if not entries:
            return
        if self.synchronous:
            self._write([entries])
            return
        self._pending.put(entries)
        # Not the ledger lock: the committing thread may still hold the database's write
        # gate here, and the writer holds the ledger lock while it waits for that gate.
        with self._start_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="audit-ledger",
                                                daemon=True)
                self._writer.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every entry handed over so far is in the ledger and checkpointed."""
        deadline = time.monotonic() + timeout
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.002)
        with self._lock:
            if self._unsigned:
                with contextlib.suppress(*_STORE_ERRORS):  # the writer signs it later
                    self._sign()

    def _run(self) -> None:
        while True:
            try:
                batches = [self._pending.get(timeout=CHECKPOINT_S if self._unsigned else None)]
            except queues.Empty:  # quiet for a while: sign what was appended
                with self._lock:
                    if self._unsigned:
                        try:
                            self._sign()
                        except _STORE_ERRORS:
                            log.warning("audit ledger checkpoint failed; retrying")
                continue
            time.sleep(GATHER_S)
            while True:  # take everything already waiting: one checkpoint per drained batch
                try:
                    batches.append(self._pending.get_nowait())
                except queues.Empty:
                    break
            try:
                self._write_retrying([item for entries in batches for item in entries])
            except Exception:  # the changes are committed; make the gap loud
                log.exception("audit ledger append failed")
            finally:
                for _ in batches:
                    self._pending.task_done()

    def _write_retrying(self, items: list[Item]) -> None:
        """Append ``items`` in order, waiting out a busy or briefly unreachable database.

        The changes these entries record are already committed, so giving up would leave a
        gap in the ledger: the writer retries with backoff (up to :data:`RETRY_FOR` seconds)
        and resumes at the first entry the store does not hold yet, never writing one twice.
        """
        progress = _Progress()
        delay, deadline = 0.05, time.monotonic() + RETRY_FOR
        while True:
            try:
                self._append_from(items, progress)
                return
            except _STORE_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("audit ledger store failed (%s); retrying in %.2f s",
                            exc.__class__.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                with self._lock:
                    self._ledger = None  # re-read the head on the next attempt
                    with contextlib.suppress(*_STORE_ERRORS):
                        progress.settle(self.store.last_entry(), items)

    def _append_from(self, items: list[Item], progress: _Progress, *, sign: bool = False
                     ) -> None:
        with self._lock:
            ledger = self._current(key_check=False)
            if progress.head is None:
                last = self.store.last_entry()
                progress.head = last.seq if last else 0
            if progress.written < len(items):
                run = ledger.append_all(items[progress.written:])  # one transaction
                progress.written, progress.head = len(items), run[-1].seq
                self._unsigned = True
            if sign or time.monotonic() - self._signed_at >= CHECKPOINT_S:
                self._sign()

    def _write(self, batches: list[list[Item]]) -> None:
        self._append_from([item for entries in batches for item in entries], _Progress(),
                          sign=True)

    def proof(self, seq: int) -> InclusionProof:
        self.flush()
        with self._lock:
            return self._current().proof(seq)

    def record(self, actor: str, action: str, subject: str,
               payload: dict[str, Any] | None = None) -> None:
        self.append([(actor, action, subject, payload or {})])

    def attach(self, sessions: sessionmaker[Session]) -> None:
        """Install the after-commit interceptor on every session the app makes."""

        def after_commit(session: Session) -> None:
            entries = session.info.pop(_QUEUE, [])
            try:
                self.append(entries)
            except Exception:  # the change itself is committed; make the gap loud
                log.exception("audit ledger append failed for %d entries", len(entries))

        def after_rollback(session: Session) -> None:
            session.info.pop(_QUEUE, None)

        event.listen(sessions, "after_commit", after_commit)
        event.listen(sessions, "after_rollback", after_rollback)
