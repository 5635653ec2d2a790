"""``healthspace audit verify`` and ``crosscheck`` on real hub and node files."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ledgerkit import FOREIGN_KEY, KEY, TickingClock
from nacl.signing import SigningKey
from typer.testing import CliRunner

from healthspace.cli.audit import app
from healthspace.hub.db.session import make_engine
from healthspace.ledger.checkpoint import key_id
from healthspace.ledger.crosscheck import HUB_ACTION, NODE_ACTION, node_actor, task_subject
from healthspace.ledger.ledger import Ledger
from healthspace.ledger.sqla_store import SqlAlchemyLedgerStore
from healthspace.ledger.sqlite_store import SqliteLedgerStore
from healthspace.node.state import NodeState

runner = CliRunner()


@dataclass
class Files:
    hub: Path
    node: Path
    hub_ledger: Ledger
    node_ledger: Ledger


@pytest.fixture
def files(hub_template: Path, tmp_path: Path) -> Iterator[Files]:
    hub = tmp_path / "hub.sqlite"
    shutil.copy(hub_template, hub)
    db = sqlite3.connect(hub)
    db.execute("INSERT INTO hub_keys (kind, private_key, public_key, created_at) "
               "VALUES ('ed25519', ?, ?, '2026-01-01 00:00:00')",
               (KEY.encode().hex(), key_id(KEY)))
    db.commit()
    db.close()
    engine = make_engine(f"sqlite:///{hub}")
    hub_ledger = Ledger(SqlAlchemyLedgerStore(engine), owner="hub", signing_key=KEY,
                        checkpoint_every=4, clock=TickingClock())
    node = tmp_path / "state.sqlite"
    NodeState.init(node)
    db = sqlite3.connect(node)
    private = db.execute("SELECT private_key FROM keys WHERE kind = 'ed25519'").fetchone()[0]
    db.close()
    node_store = SqliteLedgerStore(node)
    node_ledger = Ledger(node_store, owner="h1", signing_key=SigningKey(bytes.fromhex(private)),
                         checkpoint_every=4, clock=TickingClock())
    for task in range(1, 6):
        subject = task_subject(1, 1, task)
        hub_ledger.append(node_actor("h1"), HUB_ACTION, subject, {"status": "completed"})
        node_ledger.append(node_actor("h1"), NODE_ACTION, subject, {"status": "completed"})
    hub_ledger.append(node_actor("h2"), HUB_ACTION, task_subject(1, 1, 99))
    hub_ledger.checkpoint()
    node_ledger.checkpoint()
    yield Files(hub, node, hub_ledger, node_ledger)
    node_store.close()
    engine.dispose()


def test_verify_intact_hub_and_node(files: Files) -> None:
    for args in (["--hub-db", f"sqlite:///{files.hub}"], ["--hub-db", str(files.hub)],
                 ["--node-state", str(files.node)]):
        result = runner.invoke(app, ["verify", *args])
        assert result.exit_code == 0, result.output
        assert "intact" in result.output
    result = runner.invoke(app, ["verify", "--node-state", str(files.node), "--json"])
    doc = json.loads(result.output)
    assert doc["ok"] is True and doc["entries"] == 5 and doc["checkpoints"] == 2


def test_verify_names_the_first_bad_entry(files: Files) -> None:
    db = sqlite3.connect(files.node)
    db.execute("UPDATE ledger_entries SET actor = 'node:mallory' WHERE seq = 3")
    db.commit()
    db.close()
    result = runner.invoke(app, ["verify", "--node-state", str(files.node), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["ok"] is False and doc["first_bad_seq"] == 3 and "edited" in doc["problem"]
    result = runner.invoke(app, ["verify", "--node-state", str(files.node)])
    assert result.exit_code == 1 and "TAMPERED" in result.output and "3" in result.output


def test_verify_with_explicit_keys(files: Files) -> None:
    hub = ["verify", "--hub-db", str(files.hub)]
    assert runner.invoke(app, [*hub, "--key", key_id(KEY)]).exit_code == 0
    result = runner.invoke(app, [*hub, "--key", key_id(FOREIGN_KEY), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["bad_checkpoint"] == 4


def test_verify_needs_exactly_one_ledger(files: Files, tmp_path: Path) -> None:
    assert runner.invoke(app, ["verify"]).exit_code != 0
    both = ["verify", "--hub-db", str(files.hub), "--node-state", str(files.node)]
    assert runner.invoke(app, both).exit_code != 0
    assert runner.invoke(app, ["verify", "--hub-db", str(tmp_path / "nope.sqlite")]).exit_code
    assert not (tmp_path / "nope.sqlite").exists()


def test_crosscheck(files: Files) -> None:
    args = ["crosscheck", "--hub-db", str(files.hub), "--node-state", str(files.node)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "consistent" in result.output
    files.node_ledger.append(node_actor("h1"), NODE_ACTION, task_subject(2, 1, 7))
    files.hub_ledger.append(node_actor("h1"), HUB_ACTION, task_subject(3, 1, 8))
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["node"] == "h1" and doc["consistent"] is False
    assert {(d["kind"], d["study_id"]) for d in doc["discrepancies"]} == {
        ("missing_on_hub", "2"), ("missing_on_node", "3")}
    result = runner.invoke(app, [*args, "--node-name", "h1"])
    assert result.exit_code == 1 and "missing_on_hub" in result.output
