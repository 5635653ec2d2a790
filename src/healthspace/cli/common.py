"""Options shared by commands that talk to the hub."""

from __future__ import annotations

from typing import Annotated

import typer

from healthspace.client.config import resolve
from healthspace.client.sdk import HubClient

HubOpt = Annotated[
    str | None,
    typer.Option("--hub", help="Hub URL (else $HEALTHSPACE_HUB, else the config file)."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="API token (else $HEALTHSPACE_TOKEN, else the config file)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def client(hub: str | None, token: str | None) -> HubClient:
    conn = resolve(hub, token)
    return HubClient(conn.hub, conn.token)
