"""``healthspace registry``: register specialty-disease registries and read their catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out
from healthspace.client.studyfile import inline_paths, read_document
from healthspace.core.errors import invalid_from_validation
from healthspace.core.registry_defs import NodeRegistryStatus, RegistrySpec, RegistryView

app = typer.Typer(help="Specialty-disease registries: a named cohort and dataset, "
                       "materialised on every participating node.", no_args_is_help=True)


def load_registry_file(path: Path) -> RegistrySpec:
    """A registry file (JSON or YAML); ``cohort_path`` / ``dataset_path`` are read relative to
    it, as in study files. Errors name the field."""
    data = inline_paths(read_document(path, "registry"), path)
    try:
        return RegistrySpec.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc


def _size(value: int | str | None) -> str:
    if value is None:
        return "-"
    return f"≈{value:,}" if isinstance(value, int) else value


def _state(status: NodeRegistryStatus) -> str:
    if status.error:
        return f"error: {status.error}"
    if status.version is None:
        return "not materialised yet"
    return "current" if status.current else "older version"


def _when(status: NodeRegistryStatus, short: bool = False) -> str:
    shape = "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M"
    return status.refreshed_at.strftime(shape) if status.refreshed_at else "-"


@app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="Registry file (YAML or JSON).")],
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Register a registry, or its next version when the file changed (operator)."""
    spec = load_registry_file(file)
    with client(hub, token) as c:
        view = c.create_registry(spec)
    if json_out:
        emit_json(view.model_dump(mode="json"))
        return
    out.print(f"registry {view.name} version {view.version} (digest {view.digest[:12]}…), "
              f"nodes: {', '.join(view.participants) or 'none yet'}", highlight=False)


@app.command("list")
def list_registries(hub: HubOpt = None, token: TokenOpt = None,
                    json_out: JsonOpt = False) -> None:
    """Every registry with each node's size (rounded to 10, '<k' when small) and refresh."""
    with client(hub, token) as c:
        views = c.registries()
    if json_out:
        emit_json([v.model_dump(mode="json") for v in views])
        return
    table = Table(caption="size: persons, rounded to 10 ('<k' below the node's minimum cell "
                          "size); sizes are what each node last reported")
    for column in ("registry", "ver", "node", "size", "refreshed", "state"):
        table.add_column(column, no_wrap=column != "state")
    for view in views:
        first = True
        for node in view.participants or ["-"]:
            status = view.status.get(node, NodeRegistryStatus(node=node))
            table.add_row(view.name if first else "", f"v{view.version}" if first else "",
                          node, _size(status.size), _when(status, short=True),
                          _state(status) if node != "-" else "no node")
            first = False
    out.print(table)
    if not views:
        err.print("no registries yet: an operator registers one with 'healthspace registry "
                  "create FILE.yaml'")


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="The registry's name.")],
         hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """One registry: its definition, version and each node's status."""
    with client(hub, token) as c:
        view = c.registry(name)
    if json_out:
        emit_json(view.model_dump(mode="json"))
        return
    columns = _dataset_columns(view)
    out.print(f"[bold]{view.name}[/] v{view.version} — {view.title}\n"
              f"{view.description or ''}\n"
              f"digest {view.digest}\nregistered {view.created_at:%Y-%m-%d %H:%M} by "
              f"{view.created_by} (first {view.first_registered_at:%Y-%m-%d})\n"
              f"refresh every {view.refresh.every_hours} h"
              f"{' and after each re-ingest' if view.refresh.on_ingest else ''}\n"
              f"entry: {view.cohort.get('entry')}\ndataset columns: {', '.join(columns)}\n"
              f"study files use: registry: {view.name}", highlight=False)
    table = Table("node", "version", "size", "dataset rows", "last refresh", "state")
    for node in view.participants:
        status = view.status.get(node, NodeRegistryStatus(node=node))
        table.add_row(node, f"v{status.version}" if status.version else "-", _size(status.size),
                      _size(status.dataset_size), _when(status), _state(status))
    out.print(table)


def _dataset_columns(view: RegistryView) -> list[str]:
    from healthspace.cohort.dataset import load_dataset

    return [name for _, name in load_dataset(view.dataset).columns()]
