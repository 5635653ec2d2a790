"""Start a real local federation: a hub process and one node process per site on loopback.

Used by ``healthspace demo``, the end-to-end tests and the benchmarks, so all three exercise
the same processes, ports and HTTP paths an installation would.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from healthspace.cdm.store import state_path
from healthspace.client.sdk import HubClient
from healthspace.core.errors import Conflict, HealthspaceError
from healthspace.governance.policy import load_policy
from healthspace.node import audit
from healthspace.node.state import NodeState


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LaunchError(HealthspaceError):
    """A process of the local federation did not come up."""


@dataclass
class NodeProcess:
    name: str
    org: str
    store: Path
    token: str
    process: subprocess.Popen[bytes] | None = None


@dataclass
class LocalFederation:
    """Hub + nodes as child processes, all state under ``workdir``."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    poll_wait: float = 20.0
    python: str = sys.executable
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    hub_process: subprocess.Popen[bytes] | None = None
    operator_token: str = ""

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "nodes").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.workdir / 'hub.sqlite'}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def operator(self) -> HubClient:
        return HubClient(self.url, self.operator_token)

    # --- hub ------------------------------------------------------------------------

    def init_hub(self) -> str:
        """Initialise the hub DB once; the operator token is kept in ``workdir`` (mode 0600)."""
        from healthspace.hub.bootstrap import init_hub

        token_file = self.workdir / "operator.token"
        if token_file.exists() and (self.workdir / "hub.sqlite").exists():
            self.operator_token = token_file.read_text().strip()
            return self.operator_token
        self.operator_token = init_hub(self.db_url)
        token_file.write_text(self.operator_token + "\n")
        token_file.chmod(0o600)
        return self.operator_token

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / "logs" / log_name, "ab")  # noqa: SIM115 - owned by the child
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.Popen(
            [self.python, "-m", "healthspace", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
        )

    def start_hub(self, timeout: float = 60.0) -> None:
        self.hub_process = self._spawn(
            ["hub", "serve", "--db", self.db_url, "--host", self.host, "--port", str(self.port),
             "--log-level", "warning"],
            "hub.log",
        )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hub_process is not None and self.hub_process.poll() is not None:
                raise LaunchError(f"hub exited early:\n{self.log_tail('hub.log')}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise LaunchError(f"hub not healthy after {timeout:.0f}s:\n{self.log_tail('hub.log')}")

    def stop_hub(self) -> None:
        _terminate(self.hub_process)
        self.hub_process = None

    def restart_hub(self) -> None:
        self.stop_hub()
        self.start_hub()

    # --- nodes ----------------------------------------------------------------------

    def ensure_org(self, name: str, kind: str) -> None:
        with self.operator() as op, contextlib.suppress(Conflict):
            op.add_org(name, kind)

    def add_node(self, name: str, org: str, store: Path, *, start: bool = True,
                 min_cell_size: int = 10, policy: dict[str, Any] | None = None,
                 identity: Path | None = None) -> NodeProcess:
        """Enrol a node for an already-ingested store and (by default) start its agent.

        The node's state (and key) is created first, so its public key is registered at
        enrolment; ``policy`` becomes the node's authoritative usage policy; ``identity`` (a
        ``person_id,national_id`` CSV) fills its identity vault for record linkage.
        """
        state = NodeState.init(state_path(Path(store)))
        if policy is not None:
            audit.set_policy(state, load_policy(policy))
        if identity is not None:
            state.load_identity(identity)
        with self.operator() as op:
            token = op.enroll_node(name, org, state.public_key_hex()).token
        node = NodeProcess(name=name, org=org, store=Path(store), token=token)
        self.nodes[name] = node
        if start:
            self.start_node(name, min_cell_size=min_cell_size)
        return node

    def start_node(self, name: str, *, min_cell_size: int = 10) -> None:
        node = self.nodes[name]
        node.process = self._spawn(
            ["node", "serve", "--store", str(node.store), "--hub", self.url,
             "--poll-wait", str(self.poll_wait), "--min-cell-size", str(min_cell_size)],
            f"node-{name}.log",
            env={"HEALTHSPACE_TOKEN": node.token},
        )

    def stop_node(self, name: str) -> None:
        _terminate(self.nodes[name].process)
        self.nodes[name].process = None

    def wait_nodes_ready(self, timeout: float = 60.0) -> None:
        """Wait until every started node has published its catalog."""
        deadline = time.monotonic() + timeout
        wanted = {n for n, p in self.nodes.items() if p.process is not None}
        while time.monotonic() < deadline:
            for name in wanted:
                proc = self.nodes[name].process
                if proc is not None and proc.poll() is not None:
                    raise LaunchError(
                        f"node {name} exited early:\n{self.log_tail(f'node-{name}.log')}"
                    )
            with self.operator() as op:
                seen = {n.name for n in op.list_nodes() if n.catalog is not None}
            if wanted <= seen:
                return
            time.sleep(0.1)
        raise LaunchError(f"nodes not ready after {timeout:.0f}s: {sorted(wanted - seen)}")

    # --- lifecycle ------------------------------------------------------------------

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / name
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        for name in list(self.nodes):
            self.stop_node(name)
        self.stop_hub()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _terminate(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
