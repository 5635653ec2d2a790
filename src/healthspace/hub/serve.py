"""Run the hub with uvicorn (called by ``healthspace hub serve``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import uvicorn

from healthspace.core.errors import InvalidInput
from healthspace.core.logs import configure_logging, uvicorn_log_config
from healthspace.hub.app import create_app
from healthspace.hub.db.session import upgrade
from healthspace.hub.settings import HubSettings


def serve(
    db_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    webhooks: Sequence[str] = (),
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    max_body_bytes: int | None = None,
    platform_fee_rate: float | None = None,
    currency: str | None = None,
    sla_sweep_seconds: float | None = 60.0,
    log_format: str = "text",
) -> None:
    """Serve the hub at ``db_url`` until interrupted (one process; long-polls are async).

    ``webhooks``: URLs that receive a signed POST on every study status change. With
    ``ssl_certfile`` and ``ssl_keyfile`` (PEM) the hub speaks HTTPS only. Pending schema
    migrations are applied first, so a hub upgraded in place starts on the current schema.
    ``log_format`` "json" writes one JSON object per log line (healthspace.core.logs).
    """
    check_tls(ssl_certfile, ssl_keyfile)
    configure_logging(log_level, log_format)  # migrations log before uvicorn takes over
    upgrade(db_url)
    settings = HubSettings(webhooks=list(webhooks), sla_sweep_seconds=sla_sweep_seconds)
    if max_body_bytes is not None:
        settings = replace(settings, max_body_bytes=max_body_bytes)
    if platform_fee_rate is not None:
        settings = replace(settings, platform_fee_rate=platform_fee_rate)
    if currency is not None:
        settings = replace(settings, currency=currency)
    uvicorn.run(create_app(db_url, settings=settings), host=host, port=port,
                log_level=log_level.lower(), log_config=uvicorn_log_config(log_level, log_format),
                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both PEM files or neither; each must exist. Errors name the option."""
    if (certfile is None) != (keyfile is None):
        raise InvalidInput("give both --ssl-certfile and --ssl-keyfile, or neither",
                           field="ssl_keyfile" if keyfile is None else "ssl_certfile")
    for name, path in (("ssl_certfile", certfile), ("ssl_keyfile", keyfile)):
        if path is not None and not Path(path).is_file():
            raise InvalidInput(f"{path} does not exist", field=name)
