"""``healthspace node``: set up a node's store and state, ingest data, run the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli import node_data, node_registry
from healthspace.cli.common import HubOpt, JsonOpt, StoreOpt, TokenOpt, check_min_cell, client
from healthspace.cli.output import emit_json, err, out
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Run a node at a data holder: store, state, agent.", no_args_is_help=True)
policy_app = typer.Typer(help="The node's usage policy (authoritative).", no_args_is_help=True)
consent_app = typer.Typer(help="Patient consent kept at the node.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
secagg_app = typer.Typer(help="Secure-aggregation keys kept at the node.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
app.add_typer(secagg_app, name="secagg")
app.add_typer(node_registry.app, name="registry")



def _state_path(store: Path) -> Path:
    from healthspace.cdm.store import state_path

    return state_path(store)


app.command("ingest")(node_data.ingest)
app.command("quality")(node_data.quality)
app.command("kanon")(node_data.kanon)
app.command("score")(node_data.score)


@app.command("init")
def init(
    store: Annotated[Path | None, typer.Option(
        "--store", help="The node's DuckDB CDM store file.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Node name for its ledger (default: the store's stem).")
    ] = None,
    folder: Annotated[Path | None, typer.Option(
        "--dir", help="Write node.toml and node.pub here (a service's config folder).")] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="The hub's URL (with --dir).")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="Where the node's token will be kept (default: DIR/node.token).")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        help="PEM CA bundle that verifies the hub (e.g. its self-signed hub.crt).")] = None,
    state: Annotated[Path | None, typer.Option(
        help="The node's state file (default: beside the DuckDB store).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Usage policy file for node.toml.")]
    = None,
    engine: Annotated[str, typer.Option(help="duckdb | postgresql | spark.")] = "duckdb",
    url: Annotated[str | None, typer.Option(
        help="PostgreSQL URL or Spark master URL (non-DuckDB engines).")] = None,
    schema: Annotated[str | None, typer.Option(
        help="PostgreSQL schema or Spark database holding the CDM.")] = None,
    parquet: Annotated[Path | None, typer.Option(
        help="Spark: a folder of <table>.parquet files.")] = None,
    log_format: Annotated[str, typer.Option(help="text | json, written to node.toml.")]
    = "text",
    json_out: JsonOpt = False,
) -> None:
    """Create the node's state file (keys, vault, outbox, ledger; mode 0600). With --dir,
    also node.toml and node.pub, the public key to give the operator for enrolment."""
    if folder is not None:
        _init_dir(folder, store=store, name=name, hub=hub, token_file=token_file,
                  ca_bundle=ca_bundle, state=state, policy=policy, engine=engine, url=url,
                  schema=schema, parquet=parquet, log_format=log_format, json_out=json_out)
        return
    from healthspace.deploy.files import private_sqlite, tighten
    from healthspace.node.state import NodeState

    if store is None:
        raise InvalidInput("give --store PATH (or --dir DIR for a service's config)",
                           field="store")
    path = _state_path(store)
    private_sqlite(path)
    node_state = NodeState.init(path, name=name)
    tighten(path)
    doc = {"store": str(store), "state": str(node_state.path),
           "public_key": node_state.public_key_hex()}
    if json_out:
        emit_json(doc)
    else:
        out.print(f"node state {node_state.path}\npublic key {doc['public_key']}",
                  highlight=False)


def _init_dir(folder: Path, *, hub: str | None, json_out: bool, **options: Any) -> None:
    from healthspace.deploy.node_init import NodeInitOptions, init_node_dir

    if hub is None:
        raise InvalidInput("give --hub URL: node.toml needs the hub's address", field="hub")
    if options["log_format"] not in ("text", "json"):
        raise InvalidInput("the log format is text or json", field="log_format")
    files = init_node_dir(folder, NodeInitOptions(hub_url=hub, **options))
    doc = {"config": str(files.config), "state": str(files.state),
           "public_key": files.public_key, "public_key_file": str(files.public_key_file),
           "token_file": str(files.token_file)}
    if json_out:
        emit_json(doc)
        return
    out.print(f"node initialised: {files.config}\nstate (0600): {files.state}\n"
              f"public key {files.public_key} (also in {files.public_key_file})\n"
              f"next: the operator enrols the node with this key; save the token it prints "
              f"in {files.token_file} (mode 0600), then: healthspace node serve --config "
              f"{files.config}", highlight=False)


@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option(
        "--config", help="node.toml written by 'node init --dir' (flags override it; so do "
        "HEALTHSPACE_NODE_* variables).")] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="The node's DuckDB CDM store file.")] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
    policy: Annotated[
        Path | None, typer.Option(help="Usage policy file (YAML/JSON); stored in the state.")
    ] = None,
    hub_key: Annotated[
        str | None, typer.Option(help="Pin this hub public key (hex) instead of first use.")
    ] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        help="PEM CA bundle that verifies the hub (else $HEALTHSPACE_CA_BUNDLE, else the "
        "system store).")] = None,
    poll_wait: Annotated[float | None, typer.Option(
        help="Long-poll seconds per request [default: 20].")] = None,
    min_cell_size: Annotated[int | None, typer.Option(
        help="This node's own minimum cell size [default: 10].")] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [default: info].")] = None,
    log_format: Annotated[str | None, typer.Option(
        help="text | json (one JSON object per line) [default: text].")] = None,
) -> None:
    """Poll the hub (outbound only) and run approved tasks until interrupted."""
    from healthspace.deploy.config import load_node_config
    from healthspace.deploy.services import serve_node

    if min_cell_size is not None:
        check_min_cell(min_cell_size)
    flags = {"store.path": _absolute(store), "hub_url": hub, "token": token,
             "policy": _absolute(policy), "hub_key": hub_key, "ca_bundle": _absolute(ca_bundle),
             "poll_wait": poll_wait, "min_cell_size": min_cell_size, "log_level": log_level,
             "log_format": log_format}
    serve_node(load_node_config(config, flags), source=config)


def _absolute(path: Path | None) -> str | None:
    return str(path.expanduser().resolve()) if path is not None else None


@app.command("rotate-key")
def rotate_key(
    store: StoreOpt, hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Replace the node's signing key; the old key vouches for the new one at the hub."""
    from healthspace.core.envelope import seal
    from healthspace.node import audit
    from healthspace.node.state import NodeState

    state = NodeState.open(_state_path(store))
    old = state.signing_key()
    with client(hub, token) as c:
        node_id = c.me().id
        statement = state.rotate_key()
        envelope = seal("key.rotate", statement, old, node_id=node_id, clock=state.clock)
        c.rotate_node_key(envelope)
    audit.record(state, "key.rotate", f"key:{statement['new_key']}", statement)
    if json_out:
        emit_json(statement)
    else:
        out.print(f"new node key {statement['new_key']} registered at the hub", highlight=False)


@secagg_app.command("forget-peer")
def forget_peer(
    store: StoreOpt,
    node: Annotated[str, typer.Argument(help="The peer node whose pinned key to drop.")],
    json_out: JsonOpt = False,
) -> None:
    """Drop a peer's pinned node key after a legitimate key change was verified out of band;
    the next roster pins its new key."""
    from healthspace.node import audit
    from healthspace.node.secagg import forget_peer as forget
    from healthspace.node.state import NodeState

    state = NodeState.open(_state_path(store))
    dropped = forget(state, node)
    if dropped:
        audit.record(state, "secagg.forget_peer", f"node:{node}", {})
    if json_out:
        emit_json({"node": node, "forgotten": dropped})
    else:
        out.print(f"pinned key of {node} {'dropped' if dropped else 'was not pinned'}",
                  highlight=False)


@app.command("enroll")
def enroll(
    name: str,
    org: Annotated[str, typer.Option(help="The data holder organisation.")],
    public_key: Annotated[
        str | None, typer.Option(help="The node's public key, as 'node init' printed it.")
    ] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Enrol a node at the hub (operator or the org's admin); prints the node's token."""
    with client(hub, token) as c:
        node = c.enroll_node(name, org, public_key)
    if json_out:
        emit_json(node.model_dump(mode="json"))
        return
    what = "enrolled" if node.created else "already enrolled; token rotated"
    err.print(f"node {node.name} ({node.org}) {what}; its token (shown once):")
    out.print(node.token, highlight=False)


@app.command("list")
def list_nodes(hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List enrolled nodes and what their catalogs publish."""
    with client(hub, token) as c:
        nodes = c.list_nodes()
    if json_out:
        emit_json([n.model_dump(mode="json") for n in nodes])
        return
    table = Table(caption="quality: the data-quality score (failed checks); per study: its price")
    table.add_column("name", no_wrap=True)
    for column in ("org", "persons", "quality", "per study", "last seen"):
        table.add_column(column)
    for n in nodes:
        persons = n.catalog.tables.get("person") if n.catalog else None
        quality = (n.catalog.quality or {}) if n.catalog else {}
        score = "-"
        if quality.get("score") is not None:
            score = f"{quality['score']:.2f}" + (f" ({quality['failed']})"
                                                 if quality.get("failed") else "")
        price = (n.prices or {}).get("per_study")
        table.add_row(n.name, f"{n.org} ({n.org_kind.value})",
                      f"≈{persons:,}" if persons else "-", score,
                      "free" if n.prices is None else f"{price or 0:,.2f}",
                      n.last_seen_at.strftime("%m-%d %H:%M") if n.last_seen_at else "-")
    out.print(table)


@app.command("catalog")
def show_catalog(store: StoreOpt) -> None:
    """Print the catalog this node would publish (JSON)."""
    from healthspace.cdm.store import catalog, open_store

    con = open_store(store, read_only=True)
    try:
        emit_json(catalog(con).model_dump(mode="json"))
    finally:
        con.close()


@policy_app.command("set")
def policy_set(file: Annotated[Path, typer.Argument(help="Policy file (YAML/JSON).")],
               store: StoreOpt) -> None:
    """Store a new usage policy; a running agent publishes it (signed) on its next cycle."""
    from healthspace.governance.policy import load_policy
    from healthspace.node import audit
    from healthspace.node.state import NodeState

    state = NodeState.init(_state_path(store))
    changed = audit.set_policy(state, load_policy(file))
    out.print("policy stored" if changed else "policy unchanged")


@policy_app.command("show")
def policy_show(store: StoreOpt) -> None:
    """Print the policy in force (the defaults when none was set), as JSON."""
    from healthspace.node.state import NodeState

    emit_json(NodeState.open(_state_path(store)).policy().model_dump(mode="json"))


@consent_app.command("import")
def consent_import(file: Annotated[Path, typer.Argument(help="consent.csv")],
                   store: StoreOpt) -> None:
    """Import consent records (person_source_value|person_id, tier, purposes, updated_at)."""
    from healthspace.node import consent
    from healthspace.node.state import NodeState

    n = consent.import_csv(NodeState.init(_state_path(store)), file)
    out.print(f"{n:,} consent records imported; effective for the next computation")


@consent_app.command("set")
def consent_set(
    store: StoreOpt,
    tier: Annotated[str, typer.Option(help="open | research_only | withheld")],
    person_source_value: Annotated[str | None, typer.Option(help="Network pseudonym.")] = None,
    person_id: Annotated[int | None, typer.Option(help="This site's person_id.")] = None,
    purposes: Annotated[str | None, typer.Option(help="';'-separated purposes.")] = None,
) -> None:
    """Record one person's consent (e.g. a withdrawal), effective for the next computation."""
    from pydantic import ValidationError

    from healthspace.core.errors import invalid_from_validation
    from healthspace.governance.consent import ConsentRecord, parse_purposes
    from healthspace.node import consent
    from healthspace.node.state import NodeState

    try:
        parsed = parse_purposes(purposes)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="purposes") from exc
    try:
        record = ConsentRecord(person_source_value=person_source_value, person_id=person_id,
                               tier=tier, purposes=parsed)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc
    consent.upsert(NodeState.init(_state_path(store)), [record])
    out.print("consent recorded")


@consent_app.command("show")
def consent_show(store: StoreOpt, json_out: JsonOpt = False) -> None:
    """Consent records per tier (persons without a record follow the policy default)."""
    from healthspace.node import consent
    from healthspace.node.state import NodeState

    state = NodeState.open(_state_path(store))
    counts = consent.tier_counts(state)
    default = state.policy().consent_default_tier.value
    if json_out:
        emit_json({"tiers": counts, "default_tier": default})
        return
    table = Table("tier", "records", title=f"consent (default tier: {default})")
    for tier, n in counts.items():
        table.add_row(tier, f"{n:,}")
    out.print(table)
