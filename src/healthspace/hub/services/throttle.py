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
    """Whether a named sweep is due on the database behind a session."""

    def __init__(self, every: timedelta = EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._last: weakref.WeakKeyDictionary[object, datetime] = weakref.WeakKeyDictionary()

    def due(self, session: Session, clock: Clock) -> bool:
        bind = session.get_bind()
        now = clock.now()
        with self._lock:
            last = self._last.get(bind)
            if last is not None and timedelta(0) <= now - last < self.every:
                return False
            self._last[bind] = now
            return True
