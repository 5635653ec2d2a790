"""``healthspace audit``: verify a hub or node ledger, and cross-check hub against node."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.output import emit_json, out
from healthspace.core.enums import ExitCode
from healthspace.core.errors import InvalidInput, NotFound
from healthspace.ledger.checkpoint import Checkpoint
from healthspace.ledger.crosscheck import NODE_ACTION, Discrepancy, crosscheck, executions
from healthspace.ledger.sqla_store import SqlAlchemyLedgerStore
from healthspace.ledger.sqlite_store import SqliteLedgerStore
from healthspace.ledger.store import LedgerStore
from healthspace.ledger.verify import VerifyReport, verify

app = typer.Typer(help="Audit ledger: verify integrity; cross-check hub and node records.",
                  no_args_is_help=True)

HubOpt = Annotated[str | None, typer.Option(
    "--hub-db", help="Hub database: SQLAlchemy URL (sqlite:///hub.sqlite) or a SQLite file path.")]
NodeOpt = Annotated[Path | None, typer.Option("--node-state", help="A node's state file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def hub_url(value: str) -> str:
    """A SQLAlchemy URL from a URL or a plain file path; a missing SQLite file is an error."""
    if "://" not in value:
        value = f"sqlite:///{Path(value).resolve()}"
    if value.startswith("sqlite:///") and not Path(value.removeprefix("sqlite:///")).is_file():
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


def _report_table(name: str, report: VerifyReport) -> Table:
    table = Table(title=f"audit ledger: {name}", show_header=False)
    status = "[green]intact[/]" if report.ok else "[bold red]TAMPERED[/]"
    rows: list[tuple[str, Any]] = [
        ("status", status), ("entries", f"{report.entries:,}"),
        ("checkpoints", f"{report.checkpoints:,}"),
        ("first bad entry", report.first_bad_seq), ("problem", report.problem),
        ("bad checkpoint (size)", report.bad_checkpoint), ("warning", report.warning),
    ]
    for label, value in rows:
        if value is not None:
            table.add_row(label, str(value))
    return table


@app.command("verify")
def verify_cmd(
    hub_db: HubOpt = None,
    node_state: NodeOpt = None,
    node_name: Annotated[str | None, typer.Option(
        help="With --node-state and --hub-db: the node's name at the hub.")] = None,
    key: Annotated[list[str] | None, typer.Option(
        "--key", help="Trusted Ed25519 public key (hex); repeatable. Default: the keys stored "
        "in the ledger's own database (hub_keys / keys).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute every hash, Merkle root and checkpoint signature; exit 1 naming the first bad
    entry if anything was edited, deleted, reordered, truncated or signed with another key.

    With both --node-state and --hub-db, the node's ledger is also held to the checkpoints it
    published to the hub, which exposes a truncation of entries and checkpoints together."""
    if hub_db is None and node_state is None:
        raise InvalidInput("give --hub-db, --node-state, or both", field="hub_db")
    store: LedgerStore
    extra: list[Checkpoint] = []
    if node_state is not None:
        node_store, stored_keys = open_node(node_state)
        store, name = node_store, str(node_state)
        if hub_db is not None:
            extra = _published_checkpoints(str(hub_db), _node_name(node_store, node_name))
    else:
        store, stored_keys = open_hub(str(hub_db))
        name = str(hub_db)
    trusted = [k.strip().lower() for k in key] if key else stored_keys
    report = verify(store, trusted, extra_checkpoints=extra)
    if json_out:
        emit_json({"ledger": name, **report.to_dict(), "trusted_keys": trusted,
                   "hub_checkpoints": len(extra)})
    else:
        out.print(_report_table(name, report))
    raise typer.Exit(int(ExitCode.OK if report.ok else ExitCode.ERROR))


def _published_checkpoints(hub_db: str, node: str) -> list[Checkpoint]:
    """The checkpoints ``node`` published to the hub (read from the hub's database)."""
    from healthspace.hub.db.session import make_engine, make_sessionmaker
    from healthspace.hub.services.checkpoints import published

    engine = make_engine(hub_db if "://" in hub_db else f"sqlite:///{hub_db}")
    try:
        with make_sessionmaker(engine)() as session:
            return published(session, node)
    finally:
        engine.dispose()


def _node_name(store: SqliteLedgerStore, given: str | None) -> str:
    """--node-name, else the node ledger's owner (its checkpoints' ledger_id), else its actor."""
    if given:
        return given
    latest = store.latest_checkpoint()
    if latest is not None:
        return latest.ledger_id
    names = {x.node for x in executions(store.entries(), NODE_ACTION)}
    if len(names) == 1:
        return names.pop()
    raise InvalidInput("cannot tell which node this state file belongs to; pass --node-name")


def _discrepancy_table(node: str, found: list[Discrepancy]) -> Table:
    table = Table(title=f"hub vs node {node}: {len(found)} discrepancies")
    for column in ("kind", "study", "round", "task", "seq", "detail"):
        table.add_column(column)
    for d in found:
        table.add_row(d.kind, d.study_id, str(d.round), d.task_id, str(d.seq), d.detail)
    return table


@app.command("crosscheck")
def crosscheck_cmd(
    hub_db: HubOpt = None,
    node_state: NodeOpt = None,
    node_name: Annotated[str | None, typer.Option(
        "--node-name", help="The node's name at the hub (default: the node ledger's owner).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Report every execution the hub or the node recorded that the other side lacks."""
    if hub_db is None or node_state is None:
        raise InvalidInput("both --hub-db and --node-state are required")
    hub_store, _ = open_hub(hub_db)
    node_store, _ = open_node(node_state)
    node = _node_name(node_store, node_name)
    found = crosscheck(hub_store.entries(), node_store.entries(), node)
    if json_out:
        emit_json({"node": node, "consistent": not found,
                   "discrepancies": [d.to_dict() for d in found]})
    elif found:
        out.print(_discrepancy_table(node, found))
    else:
        out.print(f"[green]consistent[/]: hub and node {node} record the same executions")
    raise typer.Exit(int(ExitCode.ERROR if found else ExitCode.OK))
