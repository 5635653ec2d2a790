"""The Alembic migrations build exactly the schema the SQLAlchemy models describe, on SQLite
and on PostgreSQL, and every one of them downgrades and upgrades again."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from healthspace.hub.db.models import Base
from healthspace.hub.db.session import alembic_config, make_engine, upgrade


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    # The ledger's tables belong to healthspace.ledger's own metadata, not the hub models.
    return [d for d in diff if not (isinstance(d, tuple) and d[0] == "remove_table"
                                    and d[1].name.startswith("ledger_"))]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty hub database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("pg_cluster").database())


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    upgrade(db_url)
    assert _drift(db_url) == []


def test_governance_migration_downgrades_and_upgrades(db_url: str) -> None:
    upgrade(db_url)
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0002_ledger")
    command.upgrade(cfg, "head")
    assert _drift(db_url) == []


def test_every_migration_downgrades_to_nothing_and_back(db_url: str) -> None:
    upgrade(db_url)
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "base")
    assert _tables(db_url) == set()  # every table the migrations made is gone
    command.upgrade(cfg, "head")
    assert _drift(db_url) == []


def test_existing_node_keys_carry_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url, "0002_ledger")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO organisations (id, name, kind, created_at) "
            "VALUES (1, 'hosp', 'hospital', '2025-01-01 00:00:00')"
        )
        connection.exec_driver_sql(
            "INSERT INTO nodes (id, name, org_id, public_key, enrolled_at) "
            f"VALUES (1, 'n', 1, '{'ab' * 32}', '2025-01-01 00:00:00')"
        )
    upgrade(url)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT node_id, public_key, retired_at FROM node_keys"
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "ab" * 32, None)]
