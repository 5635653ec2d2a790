"""Options shared by commands that talk to the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthspace.client.config import resolve
from healthspace.client.sdk import HubClient
from healthspace.core.errors import InvalidInput
from healthspace.core.limits import MIN_CELL_FLOOR

HubOpt = Annotated[
    str | None,
    typer.Option("--hub", help="Hub URL (else $HEALTHSPACE_HUB, else the config file)."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="API token (else $HEALTHSPACE_TOKEN, else the config file)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
StoreOpt = Annotated[Path, typer.Option("--store", help="The node's DuckDB CDM store file.")]


def client(hub: str | None, token: str | None) -> HubClient:
    conn = resolve(hub, token)
    return HubClient(conn.hub, conn.token)


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``: the comma-separated list options."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def check_min_cell(value: int) -> int:
    """A minimum cell size given on the command line, refused below the floor."""
    if value < MIN_CELL_FLOOR:
        raise InvalidInput(f"the minimum cell size cannot be below {MIN_CELL_FLOOR}",
                           field="min_cell_size")
    return value
