"""Shared router pieces: pagination bounds, the lazy round-deadline sweep."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Query

from healthspace.hub.deps import HubState
from healthspace.hub.notifier import node_topic
from healthspace.hub.services import deadlines

MAX_LIMIT = 500


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
