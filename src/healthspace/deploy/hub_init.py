"""``hub init --dir``: the hub's database, operator token, certificate and ``hub.toml``.

Everything secret is created at mode 0600 (the token file, the TLS key, a SQLite database
holding the hub's signing key). Nothing is overwritten: a second init of the same folder or
database is refused, and ``hub.toml`` is written last, so its presence means the init finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healthspace.core.errors import Conflict, InvalidInput
from healthspace.deploy.config import HUB_CONFIG_NAME, load_hub_config
from healthspace.deploy.files import (
    PRIVATE,
    private_sqlite,
    sqlite_path,
    tighten,
    toml_lines,
    write_file,
)
from healthspace.deploy.tls import self_signed, subject_names

TOKEN_NAME = "operator.token"  # noqa: S105 - a file name
CERT_NAME, KEY_NAME = "hub.crt", "hub.key"


@dataclass(frozen=True)
class HubFiles:
    """What ``hub init --dir`` wrote."""

    config: Path
    db: str
    token_file: Path
    certfile: Path | None
    keyfile: Path | None
    names: tuple[str, ...] = ()  # the self-signed certificate's subject names


@dataclass(frozen=True)
class HubInitOptions:
    db: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    tls_self_signed: bool = False
    certfile: Path | None = None
    keyfile: Path | None = None
    san: tuple[str, ...] = ()
    log_format: str = "text"


def _check(options: HubInitOptions) -> None:
    if options.tls_self_signed and (options.certfile or options.keyfile):
        raise InvalidInput("give --tls-self-signed or --certfile/--keyfile, not both",
                           field="tls_self_signed")
    if (options.certfile is None) != (options.keyfile is None):
        raise InvalidInput("give both --certfile and --keyfile, or neither",
                           field="keyfile" if options.keyfile is None else "certfile")
    for name, path in (("certfile", options.certfile), ("keyfile", options.keyfile)):
        if path is not None and not path.is_file():
            raise InvalidInput(f"{path} does not exist", field=name)
    if not 1 <= options.port <= 65535:
        raise InvalidInput("a TCP port is between 1 and 65535", field="port")


def init_hub_dir(folder: Path, options: HubInitOptions) -> HubFiles:
    """Initialise a hub whose files live in ``folder``; returns the paths written."""
    from healthspace.hub.bootstrap import init_hub

    _check(options)
    folder = folder.resolve()
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    config, token_file = folder / HUB_CONFIG_NAME, folder / TOKEN_NAME
    certfile, keyfile = options.certfile, options.keyfile
    if options.tls_self_signed:
        certfile, keyfile = folder / CERT_NAME, folder / KEY_NAME
    targets = [config, token_file, *([certfile, keyfile] if options.tls_self_signed else [])]
    for target in targets:
        if target is not None and target.exists():
            raise Conflict(f"{target} already exists: this hub folder is initialised",
                           field="dir")
    db = options.db or f"sqlite:///{folder / 'hub.sqlite'}"
    db_file = sqlite_path(db)
    if db_file is not None:
        private_sqlite(db_file)
    token = init_hub(db)
    if db_file is not None:
        tighten(db_file)
    write_file(token_file, token + "\n", PRIVATE)
    names: list[str] = []
    if options.tls_self_signed:
        assert certfile is not None and keyfile is not None
        names = subject_names(options.host, options.san)
        self_signed(certfile, keyfile, names)
    write_file(config, render(options, db, certfile, keyfile), PRIVATE)
    load_hub_config(config, environ={})  # what we wrote must load: fail here, not at serve
    return HubFiles(config=config, db=db, token_file=token_file,
                    certfile=certfile.resolve() if certfile else None,
                    keyfile=keyfile.resolve() if keyfile else None, names=tuple(names))


def render(options: HubInitOptions, db: str, certfile: Path | None,
           keyfile: Path | None) -> str:
    """``hub.toml`` with every key written out and explained."""
    head = [
        "# healthspace hub settings, written by `healthspace hub init`.",
        "# Each key can be overridden by HEALTHSPACE_HUB_<KEY> (nested keys joined by __,",
        "# e.g. HEALTHSPACE_HUB_TLS__CERTFILE) and by the `hub serve` flag of the same name.",
        "",
    ]
    body = toml_lines([
        ("db", db, "SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"),
        ("host", options.host, "interface to listen on (0.0.0.0: all)"),
        ("port", options.port, "TCP port"),
        ("webhooks", [], "URLs POSTed (signed) on every study status change"),
        ("max_body_mb", 64, "refuse request bodies above this many MB"),
        ("platform_fee", 10.0, "percent of every charge the platform keeps at settlement"),
        ("currency", "CNY", "settlement currency (ISO 4217)"),
        ("sla_sweep", 60.0, "check service-level targets every this many seconds (0: on read)"),
        ("log_level", "info", "critical | error | warning | info | debug"),
        ("log_format", options.log_format, "text | json (one JSON object per line)"),
    ])
    tls = ["", "# HTTPS: the certificate (PEM, chain first) and its private key; both or neither.",
           "[tls]"]
    tls += toml_lines([
        ("certfile", certfile.resolve() if certfile else None, ""),
        ("keyfile", keyfile.resolve() if keyfile else None, ""),
    ])
    return "\n".join(head + body + tls) + "\n"
