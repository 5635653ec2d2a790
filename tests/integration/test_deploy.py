"""docs/deploy.md, followed as written on one machine: hub and two nodes over TLS on loopback.

The guide's shell blocks marked ``<!-- deploy-test: MACHINE -->`` are extracted and run with
bash, each on its "machine" (its own home folder and working directory); the services are
started from the ExecStart lines of the systemd units in deploy/systemd. The only changes to
the text are the rehearsal's substitutions below: the guide's absolute folders move under a
temporary root, the hub's name, interface and port become 127.0.0.1 and a free port, the
services run as the current user (no sudo, no ``healthspace`` account) and ``scp`` copies
between the machines' folders. Hospital B's blocks are hospital A's with the names replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from healthspace.client.http import CA_BUNDLE_ENV
from healthspace.client.sdk import HubClient
from healthspace.deploy.tls import self_signed
from healthspace.launch import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "deploy.md"
UNITS = REPO / "deploy" / "systemd"
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"<!-- deploy-test: ([\w-]+) -->\n```bash\n(.*?)```", re.S)
HOSTS = {"hub": "hub.example.org", "node-a": "node-a.example.org",
         "node-b": "node-b.example.org", "consumer": "ws.pharma.example.com"}
NODES = {"node-a": ("hospital-a", "hospital_a", "hospital_1"),
         "node-b": ("hospital-b", "hospital_b", "hospital_2")}


def blocks() -> list[tuple[str, str]]:
    """The guide's runnable blocks in order: (machine, script)."""
    found = [(m.group(1), m.group(2)) for m in BLOCK.finditer(GUIDE.read_text())]
    assert found, "docs/deploy.md has no deploy-test blocks"
    return found


@dataclass
class Rehearsal:
    root: Path
    port: int

    def home(self, machine: str) -> Path:
        path = self.root / "machines" / machine
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rewrite(self, text: str, node: str | None = None) -> str:
        """The guide's text for this machine on loopback (the substitutions listed above)."""
        pairs = [("sudo -u healthspace ", ""), (" -o healthspace -g healthspace", ""),
                 ("sudo ", ""), ("hub.example.org:8443", f"127.0.0.1:{self.port}"),
                 ("--port 8443", f"--port {self.port}"),
                 ("--host 0.0.0.0", "--host 127.0.0.1"),
                 ("/opt/healthspace/bin/", f"{BIN}/")]
        for folder in ("/etc/healthspace", "/var/lib/healthspace", "/srv/omop-export"):
            pairs.append((folder, f"{self.root}{folder}"))
        if node == "node-b":
            pairs += [("hospital-a", "hospital-b"), ("hospital_a", "hospital_b"),
                      ("hospital_1", "hospital_2"), ("node-a.", "node-b.")]
        for old, new in pairs:
            text = text.replace(old, new)
        return text

    def env(self, machine: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHSPACE_")}
        env.pop("XDG_CONFIG_HOME", None)
        return {**env, "HOME": str(self.home(machine)), "PATH": f"{BIN}:{env['PATH']}",
                "USER": env.get("USER") or _user(), "PYTHONUNBUFFERED": "1"}

    def prelude(self) -> str:
        """``scp`` between the machines' folders: ``host:/abs`` is shared, ``host:rel`` is
        relative to that machine's home."""
        cases = "".join(f"{host}) echo {self.home(m)};; " for m, host in HOSTS.items())
        return (
            "set -euo pipefail\n"
            f'__home() {{ case "$1" in {cases}*) echo "unknown host $1" >&2; return 1;; esac; }}\n'
            '__path() { case "$1" in *:*) local h="${1%%:*}" p="${1#*:}"; h="${h#*@}";\n'
            '  case "$p" in /*) echo "$p";; *) echo "$(__home "$h")/$p";; esac;;\n'
            '  *) echo "$1";; esac; }\n'
            'scp() { local n=$# i; local dst; dst=$(__path "${!n}");\n'
            '  for ((i=1; i<n; i++)); do cp "$(__path "${!i}")" "$dst"; done; }\n'
        )

    def run(self, machine: str, script: str, node: str | None = None) -> str:
        proc = subprocess.run(
            ["bash", "-c", self.prelude() + self.rewrite(script, node)],
            cwd=self.home(machine), env=self.env(machine), capture_output=True, text=True,
            timeout=300)
        assert proc.returncode == 0, (
            f"block on {machine} ({node}) failed, exit {proc.returncode}:\n{script}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        return proc.stdout

    def exec_start(self, unit: str, instance: str | None = None
                   ) -> tuple[list[str], dict[str, str]]:
        """The unit's ExecStart as an argument list and the variables of its EnvironmentFile
        (``KEY=value`` lines, optional as the leading ``-`` says), on loopback."""
        text = (UNITS / unit).read_text()
        if instance is not None:
            text = text.replace("%i", instance)
        lines = text.splitlines()
        command = next(x for x in lines if x.startswith("ExecStart=")).removeprefix("ExecStart=")
        env: dict[str, str] = {}
        for line in lines:
            if line.startswith("EnvironmentFile="):
                path = Path(self.rewrite(line.removeprefix("EnvironmentFile=").lstrip("-")))
                if path.exists():
                    pairs = (x.split("=", 1) for x in path.read_text().splitlines() if "=" in x)
                    env.update({k.strip(): v.strip() for k, v in pairs})
        return self.rewrite(command).split(), env


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class Deployment:
    rehearsal: Rehearsal
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path

    @property
    def etc(self) -> Path:
        return self.rehearsal.root / "etc" / "healthspace"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.rehearsal.port}"

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]


def _spawn(rehearsal: Rehearsal, logs: Path, name: str, unit: str, machine: str,
           instance: str | None = None) -> subprocess.Popen[bytes]:
    """Start a unit's ExecStart as systemd would: its EnvironmentFile, stderr to a log."""
    argv, extra = rehearsal.exec_start(unit, instance)
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=rehearsal.home(machine), env={**rehearsal.env(machine), **extra})


# The units' optional override files: shorter long-polls (a quicker test shutdown) and, on
# hospital B, JSON logs.
NODE_ENV = {"hospital-a": "HEALTHSPACE_NODE_POLL_WAIT=5\n",
            "hospital-b": "HEALTHSPACE_NODE_POLL_WAIT=5\nHEALTHSPACE_NODE_LOG_FORMAT=json\n"}


def _wait_hub(deployment: Deployment, ca: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deployment.processes["hub"].poll() is not None:
            raise AssertionError(f"hub exited:\n{deployment.log('hub')}")
        try:
            if httpx.get(f"{deployment.url}/healthz", verify=str(ca), timeout=1).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"hub not healthy:\n{deployment.log('hub')}")


def _wait_nodes(deployment: Deployment, token: str, names: set[str], timeout: float = 90
                ) -> None:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for name, proc in deployment.processes.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{deployment.log(name)}")
        with HubClient(deployment.url, token) as op:
            seen = {n.name for n in op.list_nodes() if n.catalog is not None}
        if names <= seen:
            return
        time.sleep(0.2)
    raise AssertionError(f"nodes not ready: {sorted(names - seen)}")


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for name in sorted(processes, key=lambda n: n == "hub"):  # nodes first, then the hub
        proc = processes[name]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Every block of the guide run in order; the services left running for the tests."""
    rehearsal = Rehearsal(tmp_path_factory.mktemp("deploy"), free_port())
    logs = rehearsal.root / "logs"
    logs.mkdir()
    deployment = Deployment(rehearsal, {}, logs)
    mp = pytest.MonkeyPatch()
    try:
        for machine, script in blocks():
            if machine == "start-hub":
                deployment.processes["hub"] = _spawn(
                    rehearsal, logs, "hub", "healthspace-hub.service", "hub")
                _wait_hub(deployment, deployment.etc / "hub" / "hub.crt")
            elif machine == "start-node":
                for node, (name, _, _) in NODES.items():
                    (deployment.etc / "nodes" / name / "node.env").write_text(NODE_ENV[name])
                    deployment.processes[node] = _spawn(
                        rehearsal, logs, node, "healthspace-node@.service", node, name)
                mp.setenv(CA_BUNDLE_ENV, str(deployment.etc / "hub" / "hub.crt"))
                token = (deployment.etc / "hub" / "operator.token").read_text().strip()
                _wait_nodes(deployment, token, {n for n, _, _ in NODES.values()})
            elif machine == "node":
                for node in NODES:
                    rehearsal.run(node, script, node)
            elif machine == "hub-each-node":
                for node in NODES:
                    rehearsal.run("hub", script, node)
            elif machine == "rehearsal":
                rehearsal.run("node-a", script)
            else:
                rehearsal.run(machine, script)
        yield deployment
    finally:
        _stop(deployment.processes)
        mp.undo()


def _pooled_reference(export: Path, sites: list[str]) -> dict[str, int]:
    """Persons whose first E11 diagnosis was at 40 or older, per site, by hand-written SQL
    over the CSV files the nodes ingested."""
    counts = {}
    for site in sites:
        folder = export / site

        def csv(table: str, folder: Path = folder) -> str:
            return f"read_csv_auto('{(folder / f'{table}.csv').as_posix()}')"

        sql = f"""
        WITH c AS (SELECT concept_id FROM {csv('concept')}
                   WHERE vocabulary_id = 'ICD10' AND starts_with(concept_code, 'E11')),
        first_dx AS (
          SELECT o.person_id, min(o.condition_start_date) AS d FROM {csv('condition_occurrence')} o
          WHERE o.condition_concept_id IN (SELECT concept_id FROM c)
             OR o.condition_source_concept_id IN (SELECT concept_id FROM c)
          GROUP BY o.person_id)
        SELECT count(*) FROM first_dx f JOIN {csv('person')} p USING (person_id)
        WHERE year(f.d) - p.year_of_birth >= 40
        """
        counts[site] = int(duckdb.connect().execute(sql).fetchone()[0])
    return counts


def test_the_consumer_gets_the_pooled_count_over_https(deployed: Deployment):
    result = json.loads((deployed.rehearsal.home("consumer") / "t2d_result.json").read_text())
    assert result["status"] == "completed"
    assert result["nodes"] == {"hospital-a": "completed", "hospital-b": "completed"}
    expected = _pooled_reference(deployed.rehearsal.root / "srv" / "omop-export",
                                 ["hospital_1", "hospital_2"])
    assert all(n >= 10 for n in expected.values()), expected
    assert result["sites"] == {"hospital-a": expected["hospital_1"],
                               "hospital-b": expected["hospital_2"]}
    assert result["total"] == sum(expected.values())


def test_secrets_are_private_and_tokens_not_left_behind(deployed: Deployment):
    etc, var = deployed.etc, deployed.rehearsal.root / "var" / "lib" / "healthspace"
    private = [etc / "hub" / "hub.toml", etc / "hub" / "operator.token", etc / "hub" / "hub.key",
               var / "hub" / "hub.sqlite"]
    for name, _, _ in NODES.values():
        private += [etc / "nodes" / name / "node.toml", etc / "nodes" / name / "node.token",
                    var / "nodes" / name / f"{name}.state.sqlite"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((etc / "hub" / "hub.crt").stat().st_mode) == 0o644
    homes = [deployed.rehearsal.home(m) for m in HOSTS]
    assert not [p for h in homes for p in h.glob("*.token")], "a token was left in a home"


def test_the_hub_serves_https_only_with_its_certificate(deployed: Deployment):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{deployed.url}/healthz", timeout=5)  # the system store does not know it
    with pytest.raises(httpx.TransportError):
        httpx.get(deployed.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_a_node_with_the_wrong_ca_bundle_refuses_to_connect(deployed: Deployment, tmp_path):
    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    self_signed(other_cert, other_key, ["127.0.0.1"])
    config = deployed.etc / "nodes" / "hospital-a" / "node.toml"
    env = deployed.rehearsal.env("node-a")
    proc = subprocess.run(
        [str(BIN / "healthspace"), "node", "serve", "--config", str(config),
         "--ca-bundle", str(other_cert)],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "ca_bundle" in proc.stderr and str(other_cert) in proc.stderr
    assert "does not trust" in proc.stderr
    proc = subprocess.run(
        [str(BIN / "healthspace"), "node", "serve", "--config", str(config)],
        env={**env, "HEALTHSPACE_NODE_CA_BUNDLE": str(tmp_path / "missing.pem")},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "HEALTHSPACE_NODE_CA_BUNDLE" in proc.stderr and "missing.pem" in proc.stderr
    assert deployed.processes["node-a"].poll() is None  # the running node is unaffected


def test_node_env_overrides_give_json_logs(deployed: Deployment):
    """hospital B's node.env sets HEALTHSPACE_NODE_LOG_FORMAT=json; A keeps text."""
    lines = [x for x in deployed.log("node-b").splitlines() if x.strip()]
    docs = [json.loads(x) for x in lines]
    assert all({"ts", "level", "logger", "message"} <= d.keys() for d in docs)
    assert any(d["message"].startswith("node hospital-b polling https://") for d in docs)
    assert any("catalog and policy" in d["message"] for d in docs)
    assert not deployed.log("node-a").lstrip().startswith("{")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_units_pass_systemd_analyze_verify(deployed: Deployment, tmp_path):
    for unit, target in (("healthspace-hub.service", "healthspace-hub.service"),
                         ("healthspace-node@.service", "healthspace-node@hospital-a.service")):
        text = (UNITS / unit).read_text().replace("/opt/healthspace/bin/", f"{BIN}/")
        (tmp_path / target).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "./healthspace-hub.service",
         "./healthspace-node@hospital-a.service"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "healthspace" not in proc.stderr, proc.stderr
    for unit in ("healthspace-hub.service", "healthspace-node@hospital-a.service"):
        proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"./{unit}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        level = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", proc.stdout)
        assert level is not None, proc.stdout + proc.stderr
        assert float(level.group(1)) <= 2.0 and level.group(2) == "OK", level.group(0)
