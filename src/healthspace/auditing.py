"""Audit a data space from its files: the hub database and the nodes' state files.

Shared by ``healthspace audit`` and the demo: open a ledger with the keys stored beside it,
verify it (a node's also against the checkpoints it published to the hub), and cross-check
the hub's record of executions against a node's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from healthspace.core.errors import InvalidInput, NotFound
from healthspace.ledger.checkpoint import Checkpoint
from healthspace.ledger.crosscheck import NODE_ACTION, Discrepancy, crosscheck, executions
from healthspace.ledger.sqla_store import SqlAlchemyLedgerStore
from healthspace.ledger.sqlite_store import SqliteLedgerStore
from healthspace.ledger.verify import VerifyReport, verify


def hub_url(value: str) -> str:
    """A SQLAlchemy URL from a URL or a plain file path; a missing SQLite file is an error."""
    if "://" not in value:
        value = f"sqlite:///{Path(value).resolve()}"
    from sqlalchemy.engine import make_url

    url = make_url(value)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise NotFound(f"no hub database at {value}")
    return value


def open_hub(value: str) -> tuple[SqlAlchemyLedgerStore, list[str]]:
    """The hub's ledger store and the public keys in its ``hub_keys`` table."""
    from sqlalchemy import text

    from healthspace.hub.db.session import make_engine

    engine = make_engine(hub_url(value))
    with engine.connect() as conn:
        keys = [row[0] for row in conn.execute(text("SELECT public_key FROM hub_keys"))]
    return SqlAlchemyLedgerStore(engine), keys


def open_node(path: Path) -> tuple[SqliteLedgerStore, list[str]]:
    """The node's ledger store (opened without writing) and its current and retired keys."""
    if not path.is_file():
        raise NotFound(f"no node state file at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        keys = [row[0] for row in db.execute("SELECT public_key FROM keys")]
        has_retired = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'retired_keys'"
        ).fetchone()
        if has_retired:  # checkpoints signed before a key rotation stay verifiable
            keys += [row[0] for row in db.execute("SELECT public_key FROM retired_keys")]
    finally:
        db.close()
    return SqliteLedgerStore(path, create=False), keys


def node_name(store: SqliteLedgerStore, given: str | None = None) -> str:
    """The given name, else the node ledger's owner (its checkpoints' ledger_id), else its actor."""
    if given:
        return given
    latest = store.latest_checkpoint()
    if latest is not None:
        return latest.ledger_id
    names = {x.node for x in executions(store.entries(), NODE_ACTION)}
    if len(names) == 1:
        return names.pop()
    raise InvalidInput("cannot tell which node this state file belongs to; pass --node-name",
                       field="node_name")


def published_checkpoints(hub_db: str, node: str) -> list[Checkpoint]:
    """The checkpoints ``node`` published to the hub (read from the hub's database)."""
    from healthspace.hub.db.session import make_engine, make_sessionmaker
    from healthspace.hub.services.checkpoints import published

    engine = make_engine(hub_url(hub_db))
    try:
        with make_sessionmaker(engine)() as session:
            return published(session, node)
    finally:
        engine.dispose()


def verify_hub(hub_db: str, keys: list[str] | None = None) -> VerifyReport:
    store, stored_keys = open_hub(hub_db)
    return verify(store, keys or stored_keys)


def verify_node(
    state: Path, hub_db: str | None = None, name: str | None = None,
    keys: list[str] | None = None,
) -> tuple[VerifyReport, int]:
    """Verify a node ledger (held to its published checkpoints when ``hub_db`` is given);
    returns the report and how many hub-held checkpoints were used."""
    store, stored_keys = open_node(state)
    try:
        extra = published_checkpoints(hub_db, node_name(store, name)) if hub_db else []
        return verify(store, keys or stored_keys, extra_checkpoints=extra), len(extra)
    finally:
        store.close()


def crosscheck_files(
    hub_db: str, state: Path, name: str | None = None
) -> tuple[str, list[Discrepancy]]:
    hub_store, _ = open_hub(hub_db)
    node_store, _ = open_node(state)
    try:
        node = node_name(node_store, name)
        return node, crosscheck(hub_store.entries(), node_store.entries(), node)
    finally:
        node_store.close()
