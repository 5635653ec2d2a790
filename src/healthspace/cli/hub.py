"""``healthspace hub``: initialise and serve the coordinator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from healthspace.cli.output import emit_json, err, out
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Run the hub (coordinator): catalog, studies, orchestration.",
                  no_args_is_help=True)

DbOpt = Annotated[str, typer.Option("--db", help="SQLAlchemy URL, e.g. sqlite:///hub.sqlite")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="hub.toml written by 'hub init --dir' (flags override it; "
                 "so do HEALTHSPACE_HUB_* variables)."),
]


@app.command("init")
def init(
    db: Annotated[str | None, typer.Option(
        "--db", help="SQLAlchemy URL (default with --dir: sqlite under DIR).")] = None,
    folder: Annotated[Path | None, typer.Option(
        "--dir", help="Write hub.toml, operator.token (0600) and TLS files here.")] = None,
    host: Annotated[str, typer.Option(help="Interface hub.toml listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port hub.toml listens on.")] = 8000,
    tls_self_signed: Annotated[bool, typer.Option(
        "--tls-self-signed", help="Make a self-signed certificate (DIR/hub.crt, key 0600) for "
        "127.0.0.1, localhost, --host and every --san.")] = False,
    san: Annotated[list[str] | None, typer.Option(
        "--san", help="Another DNS name or IP the self-signed certificate is valid for; "
        "repeatable.")] = None,
    certfile: Annotated[Path | None, typer.Option(
        help="A CA-issued certificate (PEM, chain first) for hub.toml.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="Its private key (PEM).")] = None,
    log_format: Annotated[str, typer.Option(help="text | json, written to hub.toml.")] = "text",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create the hub schema and key. With --dir, also hub.toml and the operator token file;
    without it, print the first operator token once."""
    from healthspace.deploy.hub_init import HubInitOptions
    from healthspace.hub.bootstrap import init_hub

    if folder is None:
        if db is None:
            raise InvalidInput("give --dir DIR (config, token and database files) or --db URL",
                               field="dir")
        if tls_self_signed or certfile or keyfile or san:
            raise InvalidInput("TLS options need --dir (they are written to DIR/hub.toml)",
                               field="dir")
        from healthspace.deploy.files import private_sqlite, sqlite_path, tighten

        db_file = sqlite_path(db)
        if db_file is not None:
            private_sqlite(db_file)  # it holds the hub's signing key
        token = init_hub(db)
        if db_file is not None:
            tighten(db_file)
        if json_out:
            emit_json({"db": db, "operator_token": token})
            return
        err.print("hub initialised; the operator token is shown only this once:")
        out.print(token, highlight=False)
        return
    _init_dir(folder, HubInitOptions(
        db=db, host=host, port=port, tls_self_signed=tls_self_signed, certfile=certfile,
        keyfile=keyfile, san=tuple(san or ()), log_format=_log_format(log_format)), json_out)


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise InvalidInput("the log format is text or json", field="log_format")
    return value


def _init_dir(folder: Path, options: Any, json_out: bool) -> None:
    from healthspace.deploy.hub_init import init_hub_dir

    files = init_hub_dir(folder, options)
    doc = {"config": str(files.config), "db": files.db, "operator_token_file":
           str(files.token_file), "certfile": str(files.certfile) if files.certfile else None,
           "keyfile": str(files.keyfile) if files.keyfile else None,
           "certificate_names": list(files.names)}
    if json_out:
        emit_json(doc)
        return
    out.print(f"hub initialised: {files.config}\noperator token (0600): {files.token_file}",
              highlight=False)
    if files.certfile is not None:
        names = f" for {', '.join(files.names)}" if files.names else ""
        out.print(f"certificate{names}: {files.certfile}\n(give it to nodes and clients as "
                  "their CA bundle when it is self-signed)", highlight=False)
    out.print(f"start it with: healthspace hub serve --config {files.config}", highlight=False)


@app.command("serve")
def serve(
    config: ConfigOpt = None,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL, e.g. "
                                           "sqlite:///hub.sqlite")] = None,
    host: Annotated[str | None, typer.Option(
        help="Interface to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [default: 8000].")] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [default: info].")] = None,
    log_format: Annotated[str | None, typer.Option(
        help="text | json (one JSON object per line) [default: text].")] = None,
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
    max_body_mb: Annotated[int | None, typer.Option(
        help="Refuse request bodies above this (MB) [default: 64].")] = None,
    platform_fee: Annotated[float | None, typer.Option(
        help="Percent of every charge the platform keeps at settlement [default: 10].")] = None,
    currency: Annotated[str | None, typer.Option(
        help="The settlement currency policies price in (ISO 4217) [default: CNY].")] = None,
    sla_sweep: Annotated[float | None, typer.Option(
        help="Check service-level targets every this many seconds (0: only when read) "
        "[default: 60].")] = None,
) -> None:
    """Serve the hub API (OpenAPI at /docs): flags > HEALTHSPACE_HUB_* > --config > defaults."""
    from healthspace.deploy.config import load_hub_config
    from healthspace.deploy.services import serve_hub

    flags = {"db": db, "host": host, "port": port, "log_level": log_level,
             "log_format": log_format, "webhooks": webhook,
             "tls.certfile": _absolute(ssl_certfile), "tls.keyfile": _absolute(ssl_keyfile),
             "max_body_mb": max_body_mb, "platform_fee": platform_fee, "currency": currency,
             "sla_sweep": sla_sweep}
    serve_hub(load_hub_config(config, flags))


def _absolute(path: Path | None) -> str | None:
    return str(path.expanduser().resolve()) if path is not None else None


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
