"""``healthspace node registry``: the registries materialised beside this node's store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, StoreOpt, TokenOpt, check_min_cell, client
from healthspace.cli.output import emit_json, err, out
from healthspace.core.errors import InvalidInput

if TYPE_CHECKING:
    from healthspace.node.registry_refresh import Outcome, RegistryKeeper

app = typer.Typer(help="Registries materialised at this node (docs/registries.md).",
                  no_args_is_help=True)


@app.command("list")
def list_materialised(store: StoreOpt, json_out: JsonOpt = False) -> None:
    """The registry files beside the store: version, persons, rows, size published, refresh."""
    from healthspace.node import registries
    from healthspace.node.registry_refresh import describe

    folder = registries.registries_dir(store)
    found = registries.materialised(folder)
    version = store.stat().st_mtime if store.is_file() else None
    if json_out:
        emit_json([{**describe(m), "fresh": m.store_version == version} for m in found])
        return
    table = Table("registry", "version", "persons", "dataset rows", "published size",
                  "refreshed", "built from", title=f"registries in {folder}")
    for m in found:
        table.add_row(m.name, f"v{m.version}", f"{m.persons:,}", f"{m.rows:,}", str(m.size),
                      f"{m.refreshed_at:%Y-%m-%d %H:%M} ({m.seconds:.1f}s)",
                      "this store" if m.store_version == version else "an older store")
    out.print(table)
    if not found:
        err.print("no registry materialised here yet")


@app.command("refresh")
def refresh(
    store: StoreOpt,
    name: Annotated[str | None, typer.Option(
        "--name", help="Refresh this registry only (default: every one).")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Use the definitions the agent last fetched; report nothing.")]
    = False,
    min_cell_size: Annotated[int, typer.Option(
        help="This node's own minimum cell size for the published sizes.")] = 10,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Rebuild registries now from the store (the running agent also refreshes on schedule
    and after re-ingest). With the node's token, fetch the current definitions first and
    report the new status to the hub."""
    from healthspace.cdm.store import state_path
    from healthspace.core.envelope import seal
    from healthspace.node import registries
    from healthspace.node.registry_refresh import RegistryKeeper
    from healthspace.node.state import NodeState

    check_min_cell(min_cell_size)
    state = NodeState.open(state_path(store))
    keeper = RegistryKeeper(registries.registries_dir(store), site=store.stem, state=state,
                            min_cell_size=min_cell_size)
    if offline:
        keeper.load_cached()
        results = _refresh(keeper, store, name)
    else:
        with client(hub, token) as c:
            me = c.me()
            keeper.site = me.name
            keeper.set_definitions(c.registries())
            results = _refresh(keeper, store, name)
            keeper.report(c, lambda kind, payload: seal(
                kind, payload, state.signing_key(), node_id=me.id, clock=state.clock),
                always=True)
    failed = [o for o in results if o.error]
    if json_out:
        emit_json([{"name": o.name, "error": o.error, "persons": o.made.persons if o.made
                    else None, "dataset_rows": o.made.rows if o.made else None,
                    "size": o.made.size if o.made else None} for o in results])
    else:
        for o in results:
            if o.made is not None:
                out.print(f"registry {o.name} v{o.made.version}: {o.made.persons:,} persons, "
                          f"{o.made.rows:,} dataset rows (published size {o.made.size}) in "
                          f"{o.made.seconds:.2f}s", highlight=False)
            else:
                err.print(f"registry {o.name}: refresh failed: {o.error}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _refresh(keeper: RegistryKeeper, store: Path, name: str | None) -> list[Outcome]:
    from healthspace.cdm.store import open_store

    names = [d.name for d in keeper.definitions or []]
    if name is not None and name not in names:
        known = ", ".join(names) or "none"
        raise InvalidInput(f"this node takes part in no registry {name!r} (known: {known})",
                           field="name")
    if not names:
        raise InvalidInput("this node takes part in no registry yet", field="name")
    con = open_store(store)
    try:
        version = store.stat().st_mtime
        return keeper.refresh_due(con, version, names=[name] if name else None, force=True,
                                  budget=None)
    finally:
        con.close()
