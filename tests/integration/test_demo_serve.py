"""``healthspace demo --serve --json``: one JSON line with the console URL and a sign-in token
per role, a console every token signs in to, and a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROLES = ("operator", "consumer", "data_holder_admin", "auditor")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc, no extra tools)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or '' if the process wrote none within ``timeout``."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else ""


def sign_in(console: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=console.removesuffix("/console"), timeout=10.0)
    form = client.get("/console/sign-in")
    assert form.status_code == 200
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text).group(1)
    done = client.post("/console/sign-in", data={
        "form_token": form_token, "method": "token", "token": token,
        "next": "/console/dashboard"})
    assert done.status_code == 303 and done.headers["location"] == "/console/dashboard"
    return client


def test_demo_serve_prints_the_console_and_stops_cleanly_on_sigterm(tmp_path):
    workdir = tmp_path / "serve"
    stderr = (tmp_path / "demo.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthspace", "demo", "--serve", "--json", "--persons", "300",
         "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    try:
        line = read_line(proc, timeout=240)
        assert line.endswith("\n"), (tmp_path / "demo.err").read_text()[-3000:]
        doc = json.loads(line)
        assert set(doc) == {"console_url", "tokens"} and set(doc["tokens"]) == set(ROLES)
        console = doc["console_url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/console", console)
        for role, token in doc["tokens"].items():
            with contextlib.closing(sign_in(console, token)) as client:
                page = client.get("/console/dashboard")
                assert page.status_code == 200
                assert re.search(rf"· {role}</span>", page.text), (role, page.text[:2000])
                if role == "auditor":
                    assert re.search(r'data-testid="ledger-status">verified<', page.text)
                if role == "data_holder_admin":
                    assert client.get("/console/approvals").status_code == 200
                if role == "consumer":
                    assert client.get("/console/approvals").status_code == 403
                    # The demo's study is the consumer's and it completed.
                    studies = client.get("/console/studies?status=completed")
                    assert "T2D trial feasibility" in studies.text
        kids = children(proc.pid)
        assert len(kids) == 5  # the hub and four nodes (three hospitals and the payer)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "demo.err").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    assert proc.stdout.read() == ""  # nothing but the one line on stdout
    assert [pid for pid in kids if alive(pid)] == []
    with pytest.raises(httpx.TransportError):
        httpx.get(console.removesuffix("/console") + "/healthz", timeout=2.0)
    assert "stopping hub and nodes" in (tmp_path / "demo.err").read_text()
    # The hub stopped cleanly: its ledger (flushed at shutdown) verifies from the file.
    check = subprocess.run([sys.executable, "-m", "healthspace", "audit", "verify", "--hub-db",
                            str(workdir / "hub.sqlite")], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
