"""``healthspace hub``: initialise and serve the coordinator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from healthspace.cli.output import emit_json, err, out
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Run the hub (coordinator): catalog, studies, orchestration.",
                  no_args_is_help=True)

DbOpt = Annotated[str, typer.Option("--db", help="SQLAlchemy URL, e.g. sqlite:///hub.sqlite")]


@app.command("init")
def init(db: DbOpt, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create the hub schema and key; print the first operator token once."""
    from healthspace.hub.bootstrap import init_hub

    token = init_hub(db)
    if json_out:
        emit_json({"db": db, "operator_token": token})
        return
    err.print("hub initialised; the operator token is shown only this once:")
    out.print(token, highlight=False)


@app.command("serve")
def serve(
    db: DbOpt,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    webhook: Annotated[
        list[str] | None,
        typer.Option("--webhook", help="URL POSTed (signed) on every study status change; "
                     "repeatable."),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS only.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="PEM private key of the certificate.")]
    = None,
    max_body_mb: Annotated[int, typer.Option(help="Refuse request bodies above this (MB).")]
    = 64,
    platform_fee: Annotated[float, typer.Option(
        help="Percent of every charge the platform keeps at settlement.")] = 10.0,
    currency: Annotated[str, typer.Option(
        help="The settlement currency policies price in (ISO 4217).")] = "CNY",
    sla_sweep: Annotated[float, typer.Option(
        help="Check service-level targets every this many seconds (0: only when read).")]
    = 60.0,
) -> None:
    """Serve the hub API (OpenAPI at /docs)."""
    from healthspace.hub.serve import serve as run

    if max_body_mb < 1:
        raise InvalidInput("the body limit must be at least 1 MB", field="max_body_mb")
    if not 0 <= platform_fee <= 50:
        raise InvalidInput("the platform fee is a percentage from 0 to 50",
                           field="platform_fee")
    if sla_sweep < 0:
        raise InvalidInput("the SLA sweep interval cannot be negative", field="sla_sweep")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise InvalidInput("a currency is a three-letter ISO 4217 code, e.g. CNY",
                           field="currency")
    run(db, host=host, port=port, log_level=log_level, webhooks=webhook or [],
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        max_body_bytes=max_body_mb * 1024 * 1024, platform_fee_rate=platform_fee / 100,
        currency=currency, sla_sweep_seconds=sla_sweep if sla_sweep > 0 else None)


@app.command("rotate-key")
def rotate_key(db: DbOpt, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Replace the hub's signing key; the old key vouches for the new one (nodes follow)."""
    from healthspace.hub.bootstrap import rotate_hub_key

    statement = rotate_hub_key(db)
    if json_out:
        emit_json(statement)
        return
    err.print("hub key rotated; nodes pick up the new key from GET /api/v1/hub/key")
    out.print(statement["new_key"], highlight=False)
