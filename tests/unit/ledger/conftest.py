"""Fixtures: both ledger backends on real SQLite files, with raw SQL access for tampering."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ledgerkit import Backend, make_ledger

from healthspace.ledger.ledger import Ledger
from healthspace.ledger.store import LedgerStore


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
def backend(
    request: pytest.FixtureRequest, hub_template: Path, tmp_path: Path
) -> Iterator[Backend]:
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


@pytest.fixture
def ledger(store: LedgerStore) -> Ledger:
    return make_ledger(store)
