"""``healthspace node``: set up a node's store and state, ingest data, run the agent."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli import node_data
from healthspace.cli.common import HubOpt, JsonOpt, StoreOpt, TokenOpt, check_min_cell, client
from healthspace.cli.output import emit_json, err, out, setup_logging
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Run a node at a data holder: store, state, agent.", no_args_is_help=True)
policy_app = typer.Typer(help="The node's usage policy (authoritative).", no_args_is_help=True)
consent_app = typer.Typer(help="Patient consent kept at the node.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
secagg_app = typer.Typer(help="Secure-aggregation keys kept at the node.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
app.add_typer(secagg_app, name="secagg")



def _state_path(store: Path) -> Path:
    from healthspace.cdm.store import state_path

    return state_path(store)


app.command("ingest")(node_data.ingest)
app.command("quality")(node_data.quality)
app.command("kanon")(node_data.kanon)
app.command("score")(node_data.score)


@app.command("init")
def init(
    store: StoreOpt,
    name: Annotated[
        str | None, typer.Option(help="Node name for its ledger (default: the store's stem).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create the node's state file (keys, vault, outbox, ledger) beside the store."""
    from healthspace.node.state import NodeState

    state = NodeState.init(_state_path(store), name=name)
    doc = {"store": str(store), "state": str(state.path), "public_key": state.public_key_hex()}
    if json_out:
        emit_json(doc)
    else:
        out.print(f"node state {state.path}\npublic key {doc['public_key']}", highlight=False)


@app.command("serve")
def serve(
    store: StoreOpt,
    hub: HubOpt = None,
    token: TokenOpt = None,
    policy: Annotated[
        Path | None, typer.Option(help="Usage policy file (YAML/JSON); stored in the state.")
    ] = None,
    hub_key: Annotated[
        str | None, typer.Option(help="Pin this hub public key (hex) instead of first use.")
    ] = None,
    poll_wait: Annotated[float, typer.Option(help="Long-poll seconds per request.")] = 20.0,
    min_cell_size: Annotated[int, typer.Option(help="This node's own minimum cell size.")] = 10,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Poll the hub (outbound only) and run approved tasks until interrupted."""
    from healthspace.client.config import resolve
    from healthspace.governance.policy import load_policy
    from healthspace.node import audit
    from healthspace.node.agent import NodeAgent
    from healthspace.node.state import NodeState

    setup_logging(log_level)
    check_min_cell(min_cell_size)
    if not store.exists():
        raise InvalidInput(f"store {store} does not exist; run 'node ingest' first", field="store")
    conn = resolve(hub, token)
    state = NodeState.init(_state_path(store))
    if policy is not None:
        audit.set_policy(state, load_policy(policy))
    if hub_key is not None:
        state.pin_hub_key(hub_key.strip().lower())
    agent = NodeAgent(hub=conn.hub, token=conn.token, store=store, state=state,
                      poll_wait=poll_wait, min_cell_size=min_cell_size)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C
    try:
        agent.run_forever()
    except KeyboardInterrupt:
        logging.getLogger("healthspace.node").info("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as SIGINT: the pending long-poll is abandoned at once (the hub sees the
    connection close and claims nothing for it), the task being run stops (the node's state
    is transactional and the hub re-queues the task), and the process exits 0."""
    raise KeyboardInterrupt


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
