"""The hub ledger's verification for the KPI report and the console's ledger tile.

A full pass walks every entry and checkpoint, which grows with the ledger; a report read
every few seconds need not repeat it. So a full pass is made at most every
``full_every`` seconds, and in between each read resumes from where the last pass ended,
verifying only what was appended since (``ledger.verify.verify_from``): the entry count and
the verdict on new entries are always current, an edit of older rows is found by the next
full pass. The audit explorer's "verify now" and ``healthspace audit verify`` always make
a full pass.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.hub.db.models import HubKey
from healthspace.hub.services.audit import AuditTrail
from healthspace.ledger.verify import Progress, verify_from


class LedgerCheck:
    def __init__(self, full_every: float = 60.0) -> None:
        self.full_every = full_every
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._full_at = float("-inf")  # time.monotonic() of the last full pass
        self._full_when: datetime | None = None

    def report(self, session: Session, audit: AuditTrail, now: datetime) -> dict[str, Any]:
        """``{ok, entries, checkpoints, problem, full_check_at}`` for the ledger as it is."""
        audit.flush()
        keys = [k.public_key for k in session.scalars(select(HubKey))]
        with self._lock:  # two reads at once: the second resumes from the first's pass
            full = self._progress is None or time.monotonic() - self._full_at >= self.full_every
            found, progress = verify_from(audit.store, keys,
                                          None if full else self._progress)
            if full:
                self._full_at, self._full_when = time.monotonic(), now
            self._progress = progress  # None after a failure: the next read walks it all
            when = self._full_when
        return {"ok": found.ok, "entries": found.entries, "checkpoints": found.checkpoints,
                "problem": found.problem,
                "full_check_at": when.isoformat() if when is not None else None}
