"""Structured logs: one JSON object per line, secrets never written, uvicorn's access log."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from healthspace.cli.output import setup_logging
from healthspace.core.errors import InvalidInput
from healthspace.core.logs import configure_logging, redact_text, uvicorn_log_config
from healthspace.hub.bootstrap import init_hub

SECRET = "hs_Sup3rSecretTokenValue_abcdef123456"
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_time_level_logger_message_and_extras(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("healthspace.test")
    before = datetime.now(UTC)
    log.info("study %s finished", 42, extra={"study_id": 42, "nodes": ["a", "b"]})
    log.debug("not shown at INFO")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("it failed")
    lines = _json_lines(capsys.readouterr().err)
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "INFO" and first["logger"] == "healthspace.test"
    assert first["message"] == "study 42 finished"
    assert first["study_id"] == 42 and first["nodes"] == ["a", "b"]
    assert first["ts"].endswith("Z")
    stamp = datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    assert second["level"] == "ERROR" and "ZeroDivisionError" in second["exc_info"]
    assert "Traceback" in second["exc_info"]


def test_text_format_and_the_cli_wrapper(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", fmt="text")
    logging.getLogger("healthspace.test").debug("plain words")
    err = capsys.readouterr().err
    assert "plain words" in err and not err.lstrip().startswith("{")
    setup_logging("INFO")  # the old one-argument form still works
    assert logging.getLogger().level == logging.INFO


@pytest.mark.parametrize(("level", "fmt", "field"), [
    ("INFO", "xml", "log_format"), ("LOUD", "json", "log_level"), ("INFO", "", "log_format")])
def test_bad_level_or_format_names_the_option(level: str, fmt: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        configure_logging(level, fmt)
    assert caught.value.field == field
    with pytest.raises(InvalidInput) as caught:
        uvicorn_log_config(level, fmt)
    assert caught.value.field == field


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_tokens_passwords_and_authorization_headers_are_never_logged(
        fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", fmt)
    log = logging.getLogger("healthspace.test")
    log.info("calling hub with Authorization: Bearer %s", SECRET)
    log.info("headers %s", {"Authorization": f"Bearer {SECRET}", "Accept": "json"})
    log.info("login password=%s token=%s", PASSWORD.replace(" ", "-"), SECRET)
    log.info("connecting to postgresql://hub:pw-%s@db/hub", "s3cr3t")
    log.info("issued", extra={"token": SECRET, "password": PASSWORD, "user": "alice"})
    try:
        raise RuntimeError(f"rejected token {SECRET}")
    except RuntimeError:
        log.exception("request failed")
    err = capsys.readouterr().err
    for secret in (SECRET, PASSWORD, PASSWORD.replace(" ", "-"), "pw-s3cr3t"):
        assert secret not in err, (fmt, secret, err)
    assert "[redacted]" in err
    if fmt == "json":
        issued = next(d for d in _json_lines(err) if d["message"] == "issued")
        assert issued["user"] == "alice" and issued["token"] == "[redacted]"


def test_redaction_leaves_ordinary_prose_alone() -> None:
    for prose in ("basic summary computed for 3 nodes", "the bearer of the study",
                  "token budget: 3 of 5 used", "tokens issued today"):
        assert redact_text(prose) == prose
    assert redact_text("Authorization: Basic b3A6cHc=") == "Authorization: [redacted]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE = """
import sys, uvicorn
from healthspace.core.logs import uvicorn_log_config
from healthspace.hub.app import create_app
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]),
            log_config=uvicorn_log_config("info", "json"))
"""


def test_uvicorn_access_log_is_json_with_method_path_status_duration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    token = init_hub(url)
    port = _free_port()
    log_file = (tmp_path / "hub.log").open("w")
    server = subprocess.Popen([sys.executable, "-c", SERVE, url, str(port)], stderr=log_file,
                              stdout=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "hub did not start"
            time.sleep(0.1)
        me = httpx.get(f"{base}/api/v1/me?token={SECRET}",
                       headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200
        assert httpx.get(f"{base}/api/v1/studies/999", headers={
            "Authorization": f"Bearer {token}"}, timeout=5).status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=15)
        log_file.close()
    text = (tmp_path / "hub.log").read_text()
    lines = _json_lines(text)  # every line is JSON, server lines included
    access = [d for d in lines if d["logger"] == "uvicorn.access"]
    me_line = next(d for d in access if d["path"].startswith("/api/v1/me"))
    assert me_line["method"] == "GET" and me_line["status"] == 200
    assert me_line["duration_ms"] >= 0 and me_line["level"] == "INFO"
    assert next(d for d in access if d["path"] == "/api/v1/studies/999")["status"] == 404
    assert any(d["logger"].startswith("uvicorn") and "started" in d["message"].lower()
               for d in lines)
    assert SECRET not in text and token not in text
