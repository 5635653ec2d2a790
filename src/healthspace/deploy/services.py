"""Run the hub or a node from loaded settings (what ``hub serve`` / ``node serve`` call)."""

from __future__ import annotations

import inspect
import logging
import signal
import stat
from pathlib import Path
from typing import Any

from healthspace.client.config import Connection, resolve
from healthspace.core.errors import InvalidInput
from healthspace.core.logs import configure_logging
from healthspace.deploy.config import NODE_ENV_PREFIX, HubConfig, NodeConfig

log = logging.getLogger("healthspace.node")


def serve_hub(config: HubConfig) -> None:
    """Serve the hub until interrupted; pending migrations are applied first."""
    from healthspace.hub.serve import serve

    serve(config.db, host=config.host, port=config.port, log_level=config.log_level,
          webhooks=config.webhooks,
          ssl_certfile=str(config.tls.certfile) if config.tls.certfile else None,
          ssl_keyfile=str(config.tls.keyfile) if config.tls.keyfile else None,
          max_body_bytes=config.max_body_mb * 1024 * 1024,
          platform_fee_rate=config.platform_fee / 100, currency=config.currency,
          sla_sweep_seconds=config.sla_sweep if config.sla_sweep > 0 else None,
          log_format=config.log_format)


def read_token_file(path: Path) -> str:
    """The token in ``path``, refused when other users could read it (as ssh refuses keys)."""
    if not path.is_file():
        raise InvalidInput(f"token file {path} does not exist: save the token "
                           "`healthspace node enroll` printed there (mode 0600)",
                           field="token_file")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InvalidInput(f"token file {path} is readable by other users (mode {mode:04o}): "
                           f"chmod 600 {path}", field="token_file")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise InvalidInput(f"token file {path} is empty", field="token_file")
    return token


def node_connection(config: NodeConfig) -> Connection:
    """Hub URL and token: the node's settings, else the client's (HEALTHSPACE_HUB/TOKEN)."""
    token = config.token.get_secret_value() if config.token is not None else None
    if token is None and config.token_file is not None:
        token = read_token_file(config.token_file)
    if config.hub_url and token:
        return Connection(hub=config.hub_url, token=token)
    return resolve(config.hub_url, token)


def use_node_trust(config: NodeConfig, source: Path | None) -> None:
    """Verify the hub with the configured CA bundle (else $HEALTHSPACE_CA_BUNDLE, else the
    system store); errors name the ``ca_bundle`` setting."""
    from healthspace.client.http import use_ca_bundle

    if config.ca_bundle is not None:
        where = f"ca_bundle in {source}" if source else "ca_bundle"
        use_ca_bundle(config.ca_bundle, option="ca_bundle",
                      label=f"{where} (or {NODE_ENV_PREFIX}CA_BUNDLE, --ca-bundle)")


def serve_node(config: NodeConfig, source: Path | None = None) -> None:
    """Poll the hub (outbound only) and run approved tasks until interrupted."""
    from healthspace.governance.policy import load_policy
    from healthspace.node import audit
    from healthspace.node.agent import NodeAgent
    from healthspace.node.state import NodeState

    configure_logging(config.log_level, config.log_format)
    store = config.store
    if store.engine == "duckdb" and store.path is not None and not store.path.exists():
        raise InvalidInput(f"store {store.path} does not exist; run 'node ingest' first",
                           field="store")
    use_node_trust(config, source)
    conn = node_connection(config)
    state = NodeState.init(config.state_path())
    if config.policy is not None:
        audit.set_policy(state, load_policy(config.policy))
    if config.hub_key is not None:
        state.pin_hub_key(config.hub_key)
    kwargs: dict[str, Any] = {}
    if store.engine != "duckdb":
        if "engine" not in inspect.signature(NodeAgent).parameters:
            raise InvalidInput(f"this node agent reads DuckDB stores only, not {store.engine}",
                               field="store.engine")
        kwargs["engine"] = store.spec()
    agent = NodeAgent(hub=conn.hub, token=conn.token, store=_agent_store(config), state=state,
                      poll_wait=config.poll_wait, min_cell_size=config.min_cell_size, **kwargs)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C
    try:
        agent.run_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _agent_store(config: NodeConfig) -> Path:
    """The DuckDB store, or (other engines) the state file standing in for its location."""
    return config.store.path if config.store.path is not None else config.state_path()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as SIGINT: the pending long-poll is abandoned at once (the hub sees the
    connection close and claims nothing for it), the task being run stops (the node's state
    is transactional and the hub re-queues the task), and the process exits 0."""
    raise KeyboardInterrupt
