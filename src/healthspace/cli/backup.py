"""``healthspace backup`` / ``healthspace restore``: hub and node state, verified on restore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.output import emit_json, out
from healthspace.ops.manifest import Manifest

backup_app = typer.Typer(
    help="Back up hub or node state while it runs (consistent snapshot + manifest).",
    no_args_is_help=True)
restore_app = typer.Typer(
    help="Restore a backup into a fresh target and verify its audit ledger.",
    no_args_is_help=True)

DbOpt = Annotated[str, typer.Option(
    "--db", help="Hub database: SQLAlchemy URL (sqlite:///hub.db, postgresql+psycopg://…) "
    "or a SQLite file path.")]
StoreOpt = Annotated[Path, typer.Option("--store", help="The node's DuckDB store file; its "
                                        "state file (.state.sqlite) sits beside it.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace what is already there.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False)
    for label, value in rows:
        if value is not None:
            table.add_row(label, str(value))
    return table


def _show_backup(manifest: Manifest, where: Path, json_out: bool) -> None:
    if json_out:
        emit_json({"backup": str(where), **manifest.to_dict()})
        return
    rows: list[tuple[str, Any]] = [("backend", manifest.backend),
                                   ("created", manifest.created_at)]
    rows += [(f"file {name}", f"{f['bytes']:,} bytes, sha256 {f['sha256'][:16]}…")
             for name, f in manifest.files.items()]
    rows += [("ledger entries", f"{manifest.ledger.entries:,}"),
             ("ledger checkpoints", f"{manifest.ledger.checkpoints:,}"),
             ("ledger head", manifest.ledger.head_hash)]
    out.print(_table(f"{manifest.kind} backup: {where}", rows))


def _show_restore(report: Any, json_out: bool) -> None:
    if json_out:
        emit_json(report.to_dict())
        return
    ledger = report.ledger
    rows: list[tuple[str, Any]] = [
        ("backup taken", report.manifest.created_at),
        ("ledger", "[green]intact[/]" if ledger.ok else "[bold red]TAMPERED[/]"),
        ("entries", f"{ledger.entries:,}"), ("checkpoints", f"{ledger.checkpoints:,}"),
        ("head", report.manifest.ledger.head_hash), ("warning", ledger.warning)]
    out.print(_table(f"restored into {report.target}", rows))


@backup_app.command("hub")
def backup_hub_cmd(
    db: DbOpt,
    out_file: Annotated[Path, typer.Option("--out", help="Backup file to write (its manifest "
                                           "goes beside it as FILE.manifest.json).")],
    force: ForceOpt = False, json_out: JsonOpt = False,
) -> None:
    """Back up a hub database while the hub runs: SQLite's online backup API, or pg_dump -Fc
    under an exported snapshot for PostgreSQL."""
    from healthspace.ops.backup import backup_hub

    _show_backup(backup_hub(db, out_file, force=force), out_file, json_out)


@backup_app.command("node")
def backup_node_cmd(
    store: StoreOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (must be new or "
                                          "empty): state.sqlite, store.duckdb, manifest.json.")],
    force: ForceOpt = False, json_out: JsonOpt = False,
) -> None:
    """Back up a node's state file (online backup) and its DuckDB store (one consistent
    version, copied under a shared lock) while the agent runs."""
    from healthspace.ops.node_backup import backup_node

    _show_backup(backup_node(store, out_dir, force=force), out_dir, json_out)


@restore_app.command("hub")
def restore_hub_cmd(
    source: Annotated[Path, typer.Option("--from", help="The backup file (or its manifest).")],
    db: DbOpt, force: ForceOpt = False, json_out: JsonOpt = False,
) -> None:
    """Restore a hub backup into a new database (an empty PostgreSQL database, or a SQLite
    file that does not exist yet), then verify the restored ledger. Stop the hub first when
    replacing its database with --force."""
    from healthspace.ops.backup import restore_hub

    _show_restore(restore_hub(source, db, force=force), json_out)


@restore_app.command("node")
def restore_node_cmd(
    source: Annotated[Path, typer.Option("--from", help="The node backup folder.")],
    store: StoreOpt, force: ForceOpt = False, json_out: JsonOpt = False,
) -> None:
    """Restore a node backup to --store and the state file beside it, then verify the node's
    ledger. Stop the node agent first when replacing its files with --force."""
    from healthspace.ops.node_backup import restore_node

    _show_restore(restore_node(source, store, force=force), json_out)
