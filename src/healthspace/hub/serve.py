"""Run the hub with uvicorn (called by ``healthspace hub serve``)."""

from __future__ import annotations

import uvicorn

from healthspace.hub.app import create_app


def serve(db_url: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve the hub at ``db_url`` until interrupted (one process; long-polls are async)."""
    uvicorn.run(create_app(db_url), host=host, port=port, log_level=log_level)
