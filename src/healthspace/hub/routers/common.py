"""Shared router pieces: id and pagination bounds, the lazy round-deadline sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Query

from healthspace.hub.deps import HubState
from healthspace.hub.notifier import node_topic
from healthspace.hub.services import deadlines
from healthspace.hub.services.ids import MAX_ID

MAX_LIMIT = 500
# Row ids beyond what the database holds (hub/services/ids.py) are refused as input (422):
# the service would answer 404 for them, a client that sends one has a bug worth naming.
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id (1 … 2³¹−1)")]


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="at most this many items"),
    offset: int = Query(0, ge=0, le=10_000_000, description="skip this many items"),
) -> Page:
    return Page(limit=limit, offset=offset)


def sweep_deadlines(hub: HubState) -> None:
    """Drop nodes whose round timed out (services.deadlines) and wake whoever got work."""
    with hub.sessions() as session:
        woken = deadlines.sweep(session, hub.clock, hub.settings)
    if woken:
        hub.notifier.notify(*(node_topic(n) for n in woken))
