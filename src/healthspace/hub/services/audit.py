"""The hub's audit ledger: one service, fed from the session's after-commit interceptor.

Services *queue* an entry on the SQLAlchemy session with :func:`queue`; the entries are appended
to the hash-chained ledger (``healthspace.ledger``) only after that unit of work commits, so a
rolled-back change is never recorded and the ledger's own transactions never contend with the
request's. Every append is followed by a checkpoint signed with the hub's current key, so the
head is always covered (``healthspace audit verify --hub-db``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from healthspace.core.clock import Clock
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


class AuditTrail:
    """Appends queued entries after commit; one lock per process keeps appends in order."""

    def __init__(self, engine: Engine, signing_key: Callable[[], SigningKey], clock: Clock):
        self.store = SqlAlchemyLedgerStore(engine)
        self.signing_key = signing_key
        self.clock = clock
        self._lock = threading.Lock()
        self._ledger: Ledger | None = None

    def _current(self) -> Ledger:
        key = self.signing_key()  # a rotated hub key signs the next checkpoint at once
        if self._ledger is None or self._ledger.signing_key.encode() != key.encode():
            self._ledger = Ledger(self.store, owner=HUB_LEDGER, signing_key=key,
                                  checkpoint_every=1000, clock=self.clock)
        return self._ledger

    def append(self, entries: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        if not entries:
            return
        with self._lock:
            ledger = self._current()
            for actor, action, subject, payload in entries:
                ledger.append(actor, action, subject, payload)
            ledger.checkpoint()

    def proof(self, seq: int) -> InclusionProof:
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
