"""Fixtures: both ledger backends on real SQLite files, with raw SQL access for tampering."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
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


@pytest.fixture(scope="session")
def hub_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub database upgraded once through the real Alembic migrations."""
    from healthspace.hub.db.session import upgrade

    path = tmp_path_factory.mktemp("ledger_hub") / "hub.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


def _sqlalchemy_backend(template: Path, tmp_path: Path) -> Backend:
    from healthspace.hub.db.session import make_engine
    from healthspace.ledger.sqla_store import SqlAlchemyLedgerStore

    path = tmp_path / "hub.sqlite"
    shutil.copy(template, path)
    closers: list[Callable[[], None]] = []

    def factory() -> LedgerStore:
        engine = make_engine(f"sqlite:///{path}")
        closers.append(engine.dispose)
        return SqlAlchemyLedgerStore(engine)

    return Backend("sqlalchemy", path, factory, closers)


def _sqlite_backend(tmp_path: Path) -> Backend:
    from healthspace.ledger.sqlite_store import SqliteLedgerStore
    from healthspace.node.state import NodeState

    path = tmp_path / "state.sqlite"
    NodeState.init(path)  # the ledger shares the node's real state file
    closers: list[Callable[[], None]] = []

    def factory() -> LedgerStore:
        store = SqliteLedgerStore(path)
        closers.append(store.close)
        return store

    return Backend("sqlite", path, factory, closers)


@pytest.fixture(params=["sqlalchemy", "sqlite"])
def backend(request: pytest.FixtureRequest, hub_template: Path, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlalchemy":
        made = _sqlalchemy_backend(hub_template, tmp_path)
    else:
        made = _sqlite_backend(tmp_path)
    yield made
    for close in made.closers:
        close()


@pytest.fixture
def store(backend: Backend) -> LedgerStore:
    return backend.store()


def make_ledger(store: LedgerStore, every: int = 10, key: SigningKey = KEY) -> Ledger:
    return Ledger(store, owner="test-owner", signing_key=key, checkpoint_every=every,
                  clock=TickingClock())


@pytest.fixture
def ledger(store: LedgerStore) -> Ledger:
    return make_ledger(store)
