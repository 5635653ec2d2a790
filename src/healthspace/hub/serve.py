"""Run the hub with uvicorn (called by ``healthspace hub serve``)."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn

from healthspace.hub.app import create_app
from healthspace.hub.db.session import upgrade
from healthspace.hub.settings import HubSettings


def serve(
    db_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    webhooks: Sequence[str] = (),
) -> None:
    """Serve the hub at ``db_url`` until interrupted (one process; long-polls are async).

    ``webhooks``: URLs that receive a signed POST on every study status change. Pending schema
    migrations are applied first, so a hub upgraded in place starts on the current schema.
    """
    upgrade(db_url)
    settings = HubSettings(webhooks=list(webhooks))
    uvicorn.run(create_app(db_url, settings=settings), host=host, port=port, log_level=log_level)
