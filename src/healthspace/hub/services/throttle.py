"""Time-driven sweeps run at most once per second of the hub's clock, per database.

Round deadlines and approval expiries are checked lazily, whenever nodes poll or anyone
reads a study (no timer thread). Under load that is hundreds of times a second, each a few
queries, for state that only changes as the clock moves: so a sweep runs only when the
hub's clock has moved at least :data:`EVERY` since the last one over the same database
(a test that moves a fixed clock by hand still sees it run at once).
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from healthspace.core.clock import Clock

EVERY = timedelta(seconds=1)


class Throttle:
    """Whether a named piece of work is due on the database behind a session, optionally
    per ``key`` (a node's liveness stamp is written at most once per interval per node)."""

    def __init__(self, every: timedelta = EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._last: weakref.WeakKeyDictionary[object, dict[object, datetime]] = (
            weakref.WeakKeyDictionary())

    def due(self, session: Session, clock: Clock, key: object = None) -> bool:
        bind = session.get_bind()
        now = clock.now()
        with self._lock:
            seen = self._last.setdefault(bind, {})
            last = seen.get(key)
            if last is not None and timedelta(0) <= now - last < self.every:
                return False
            seen[key] = now
            return True
