"""Per-app state (engine, clock, settings, notifier, webhooks) and the dependencies exposing it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from healthspace.core.clock import Clock
from healthspace.hub.notifier import Notifier
from healthspace.hub.services.audit import AuditTrail
from healthspace.hub.services.ledger_check import LedgerCheck
from healthspace.hub.settings import HubSettings
from healthspace.hub.webhooks import WebhookSender


@dataclass
class HubState:
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    settings: HubSettings
    notifier: Notifier
    webhooks: WebhookSender
    audit: AuditTrail
    ledger_check: LedgerCheck = field(default_factory=LedgerCheck)


def get_hub(request: Request) -> HubState:
    hub: HubState = request.app.state.hub
    return hub


async def hub_state(request: Request) -> HubState:
    """``get_hub`` as a dependency: async, so FastAPI does not hop to a worker thread to read
    an attribute (every request would pay for that hop)."""
    return get_hub(request)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; services commit their own unit of work."""
    with get_hub(request).sessions() as session:
        yield session
