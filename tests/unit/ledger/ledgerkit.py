"""Helpers for ledger tests: keys, a ticking clock, backends with raw SQL access."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from healthspace.ledger.ledger import Ledger
from healthspace.ledger.store import LedgerStore

KEY = SigningKey(bytes(range(32)))
FOREIGN_KEY = SigningKey(bytes(range(100, 132)))
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


class TickingClock:
    """A deterministic clock that moves one second per reading."""

    def __init__(self) -> None:
        self._now = START

    def now(self) -> datetime:
        self._now += timedelta(seconds=1)
        return self._now


@dataclass
class Backend:
    """A ledger backend on ``path`` (always a SQLite file) plus raw access for tampering."""

    name: str
    path: Path
    factory: Callable[[], LedgerStore]
    closers: list[Callable[[], None]] = field(default_factory=list)

    def store(self) -> LedgerStore:
        """A fresh store object on the same database (as a second process would have)."""
        return self.factory()

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        db = sqlite3.connect(self.path)
        try:
            db.execute(statement, params)
            db.commit()
        finally:
            db.close()

    def rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.path)
        try:
            return db.execute(statement, params).fetchall()
        finally:
            db.close()


def make_ledger(store: LedgerStore, every: int = 10, key: SigningKey = KEY) -> Ledger:
    return Ledger(store, owner="test-owner", signing_key=key, checkpoint_every=every,
                  clock=TickingClock())
