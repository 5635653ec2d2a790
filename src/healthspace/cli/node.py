"""``healthspace node``: set up a node's store and state, ingest data, run the agent."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out, progress_bar, setup_logging
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Run a node at a data holder: store, state, agent.", no_args_is_help=True)

StoreOpt = Annotated[Path, typer.Option("--store", help="The node's DuckDB CDM store file.")]


def _state_path(store: Path) -> Path:
    from healthspace.cdm.store import state_path

    return state_path(store)


@app.command("init")
def init(store: StoreOpt, json_out: JsonOpt = False) -> None:
    """Create the node's state file (keys, vault, outbox) beside the store."""
    from healthspace.node.state import NodeState

    state = NodeState.init(_state_path(store))
    doc = {"store": str(store), "state": str(state.path), "public_key": state.public_key_hex()}
    if json_out:
        emit_json(doc)
    else:
        out.print(f"node state {state.path}\npublic key {doc['public_key']}", highlight=False)


@app.command("ingest")
def ingest(
    directory: Annotated[Path, typer.Argument(help="Folder of OMOP CDM CSV files.")],
    store: StoreOpt,
    fmt: Annotated[str, typer.Option("--format", help="Input format.")] = "omop-csv",
    json_out: JsonOpt = False,
) -> None:
    """Load OMOP CSV files into the store (atomic: a failure keeps the old store)."""
    from healthspace.cdm.ingest import ingest_dir
    from healthspace.node.state import NodeState

    if fmt != "omop-csv":
        raise InvalidInput(f"unsupported format {fmt!r}; supported: omop-csv", field="format")
    with progress_bar(not json_out) as progress:
        report = ingest_dir(store, directory, fmt=fmt, progress=progress)
    doc = report.to_dict()
    if report.identity_file:
        state = NodeState.init(_state_path(store))
        doc["identity_vault_rows"] = state.load_identity(Path(report.identity_file))
    if json_out:
        emit_json(doc)
        return
    table = Table("table", "rows", "orphans", title=f"ingested into {store}")
    orphans = doc.get("orphans", {})
    for name, rows in doc.get("tables", {}).items():
        table.add_row(name, f"{rows:,}", str(orphans.get(name, "")))
    out.print(table)
    if doc.get("skipped_files"):
        out.print(f"skipped (outside the CDM subset): {', '.join(doc['skipped_files'])}")
    if "identity_vault_rows" in doc:
        out.print(f"identity vault: {doc['identity_vault_rows']:,} persons")


@app.command("serve")
def serve(
    store: StoreOpt,
    hub: HubOpt = None,
    token: TokenOpt = None,
    poll_wait: Annotated[float, typer.Option(help="Long-poll seconds per request.")] = 20.0,
    min_cell_size: Annotated[int, typer.Option(help="This node's own minimum cell size.")] = 10,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Poll the hub (outbound only) and run approved tasks until interrupted."""
    from healthspace.client.config import resolve
    from healthspace.node.agent import NodeAgent
    from healthspace.node.state import NodeState

    setup_logging(log_level)
    if min_cell_size < 5:
        raise InvalidInput("the minimum cell size cannot be below 5", field="min_cell_size")
    if not store.exists():
        raise InvalidInput(f"store {store} does not exist; run 'node ingest' first", field="store")
    conn = resolve(hub, token)
    state = NodeState.init(_state_path(store))
    with client(conn.hub, conn.token) as c:
        name = c.me().name
    agent = NodeAgent(hub=conn.hub, token=conn.token, store=store, state=state, site=name,
                      poll_wait=poll_wait, min_cell_size=min_cell_size)
    try:
        agent.run_forever()
    except KeyboardInterrupt:
        logging.getLogger("healthspace.node").info("stopped")


@app.command("enroll")
def enroll(
    name: str,
    org: Annotated[str, typer.Option(help="The data holder organisation.")],
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Enrol a node at the hub (operator or the org's admin); prints the node's token."""
    with client(hub, token) as c:
        node = c.enroll_node(name, org)
    if json_out:
        emit_json(node.model_dump(mode="json"))
        return
    what = "enrolled" if node.created else "already enrolled; token rotated"
    err.print(f"node {node.name} ({node.org}) {what}; its token (shown once):")
    out.print(node.token, highlight=False)


@app.command("list")
def list_nodes(hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List enrolled nodes and what their catalogs publish."""
    with client(hub, token) as c:
        nodes = c.list_nodes()
    if json_out:
        emit_json([n.model_dump(mode="json") for n in nodes])
        return
    table = Table("name", "org", "kind", "persons (≈)", "last seen")
    for n in nodes:
        persons = n.catalog.tables.get("person") if n.catalog else None
        table.add_row(n.name, n.org, n.org_kind.value,
                      f"{persons:,}" if persons else "-",
                      n.last_seen_at.isoformat() if n.last_seen_at else "-")
    out.print(table)


@app.command("catalog")
def show_catalog(store: StoreOpt) -> None:
    """Print the catalog this node would publish (JSON)."""
    from healthspace.cdm.store import catalog, open_store

    con = open_store(store, read_only=True)
    try:
        emit_json(catalog(con).model_dump(mode="json"))
    finally:
        con.close()
