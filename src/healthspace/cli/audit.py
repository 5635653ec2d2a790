"""``healthspace audit``: verify a hub or node ledger, and cross-check hub against node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.auditing import crosscheck_files, verify_hub, verify_node
from healthspace.cli.output import emit_json, out
from healthspace.core.enums import ExitCode
from healthspace.core.errors import InvalidInput
from healthspace.ledger.crosscheck import Discrepancy
from healthspace.ledger.verify import VerifyReport

app = typer.Typer(help="Audit ledger: verify integrity; cross-check hub and node records.",
                  no_args_is_help=True)

HubOpt = Annotated[str | None, typer.Option(
    "--hub-db", help="Hub database: SQLAlchemy URL (sqlite:///hub.sqlite) or a SQLite file path.")]
NodeOpt = Annotated[Path | None, typer.Option("--node-state", help="A node's state file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


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
    trusted = [k.strip().lower() for k in key] if key else None
    extra = 0
    if node_state is not None:
        report, extra = verify_node(node_state, hub_db, node_name, trusted)
        name = str(node_state)
    else:
        report, name = verify_hub(str(hub_db), trusted), str(hub_db)
    if json_out:
        emit_json({"ledger": name, **report.to_dict(), "hub_checkpoints": extra})
    else:
        out.print(_report_table(name, report))
    raise typer.Exit(int(ExitCode.OK if report.ok else ExitCode.ERROR))


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
    node, found = crosscheck_files(hub_db, node_state, node_name)
    if json_out:
        emit_json({"node": node, "consistent": not found,
                   "discrepancies": [d.to_dict() for d in found]})
    elif found:
        out.print(_discrepancy_table(node, found))
    else:
        out.print(f"[green]consistent[/]: hub and node {node} record the same executions")
    raise typer.Exit(int(ExitCode.ERROR if found else ExitCode.OK))
