"""``node init --dir``: the node's state file (its keys), public key and ``node.toml``.

The state file holds the node's Ed25519 signing key, so it is created at mode 0600 before
SQLite writes a byte. The token the operator issues at enrolment goes in a separate file
(``token_file``), never in ``node.toml``, so the config can be reviewed and copied freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healthspace.core.errors import Conflict, InvalidInput
from healthspace.deploy.config import NODE_CONFIG_NAME
from healthspace.deploy.files import (
    PRIVATE,
    PUBLIC,
    private_sqlite,
    tighten,
    toml_lines,
    write_file,
)

TOKEN_NAME = "node.token"  # noqa: S105 - a file name
PUBLIC_KEY_NAME = "node.pub"


@dataclass(frozen=True)
class NodeInitOptions:
    hub_url: str
    engine: str = "duckdb"
    store: Path | None = None  # the DuckDB file
    url: str | None = None  # PostgreSQL URL / Spark master
    schema: str | None = None
    parquet: Path | None = None
    state: Path | None = None
    name: str | None = None
    token_file: Path | None = None
    ca_bundle: Path | None = None
    policy: Path | None = None
    log_format: str = "text"


@dataclass(frozen=True)
class NodeFiles:
    """What ``node init --dir`` wrote."""

    config: Path
    state: Path
    public_key_file: Path
    public_key: str
    token_file: Path


def _absolute(path: Path | None) -> Path | None:
    return path.expanduser().resolve() if path is not None else None


def _state_file(options: NodeInitOptions) -> Path:
    from healthspace.cdm.store import state_path

    if options.state is not None:
        return options.state.expanduser().resolve()
    if options.engine != "duckdb" or options.store is None:
        raise InvalidInput(f"a {options.engine} node keeps its state in a file of its own: "
                           "give --state PATH", field="state")
    return state_path(options.store.expanduser().resolve())


def _check(options: NodeInitOptions) -> None:
    from healthspace.cdm.engines import StoreSpec

    if not options.hub_url.startswith(("http://", "https://")):
        raise InvalidInput(f"{options.hub_url!r} is not an http(s) URL", field="hub")
    StoreSpec(engine=options.engine, path=_absolute(options.store),  # type: ignore[arg-type]
              url=options.url, schema=options.schema,
              parquet=_absolute(options.parquet)).validate()


def init_node_dir(folder: Path, options: NodeInitOptions) -> NodeFiles:
    """Create the node's state and keys and write ``folder/node.toml``."""
    from healthspace.node.state import NodeState

    _check(options)
    folder = folder.expanduser().resolve()
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    config, pub = folder / NODE_CONFIG_NAME, folder / PUBLIC_KEY_NAME
    for target in (config, pub):
        if target.exists():
            raise Conflict(f"{target} already exists: this node folder is initialised",
                           field="dir")
    state_file = _state_file(options)
    name = options.name or (options.store.stem if options.store else folder.name)
    private_sqlite(state_file)
    state = NodeState.init(state_file, name=name)
    tighten(state_file)
    key = state.public_key_hex()
    write_file(pub, key + "\n", PUBLIC)
    token_file = _absolute(options.token_file) or folder / TOKEN_NAME
    write_file(config, render(options, state_file, token_file), PRIVATE)
    return NodeFiles(config=config, state=state_file, public_key_file=pub, public_key=key,
                     token_file=token_file)


def render(options: NodeInitOptions, state: Path, token_file: Path) -> str:
    """``node.toml`` with every key written out and explained."""
    head = [
        "# healthspace node settings, written by `healthspace node init`.",
        "# Each key can be overridden by HEALTHSPACE_NODE_<KEY> (nested keys joined by __,",
        "# e.g. HEALTHSPACE_NODE_STORE__PATH) and by the `node serve` flag of the same name.",
        "",
    ]
    body = toml_lines([
        ("hub_url", options.hub_url, "the hub (the node only ever connects out to it)"),
        ("token_file", token_file, "the token `healthspace node enroll` printed (mode 0600)"),
        ("ca_bundle", _absolute(options.ca_bundle),
         "PEM CA bundle that verifies the hub's certificate (unset: the system store)"),
        ("state", state, "the node's state file: keys, consent, ledger, outbox"),
        ("policy", _absolute(options.policy), "usage policy file (YAML/JSON), stored at start"),
        ("poll_wait", 20.0, "seconds per long-poll request"),
        ("min_cell_size", 10, "this node's own minimum cell size (never below 5)"),
        ("log_level", "info", "critical | error | warning | info | debug"),
        ("log_format", options.log_format, "text | json (one JSON object per line)"),
    ])
    store = ["", "# Where the CDM is: engine duckdb (path), postgresql (url, schema) or spark",
             "# (url = master, schema = database, or parquet = folder of tables).", "[store]"]
    store += toml_lines([
        ("engine", options.engine, ""),
        ("path", _absolute(options.store), ""),
        ("url", options.url, ""),
        ("schema", options.schema, ""),
        ("parquet", _absolute(options.parquet), ""),
    ])
    return "\n".join(head + body + store) + "\n"
