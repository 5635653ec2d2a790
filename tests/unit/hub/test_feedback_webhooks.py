"""Consumer feedback rules, and signed study-status webhooks delivered to a real receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from hubkit import CC_PARTIAL, Space, copy_space
from nacl.signing import VerifyKey

from healthspace.hub.settings import HubSettings
from healthspace.hub.webhooks import SIGNATURE_HEADER


def _finished(space: Space) -> int:
    hub = space.hub
    study = hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    return int(study["id"])


def test_feedback_rules(space: Space) -> None:
    hub = space.hub
    running = hub.submit(space.alice, nodes=["node-b"])["id"]
    early = hub.call("POST", f"/studies/{running}/feedback", space.alice, json={"rating": 4})
    assert early.status_code == 409 and early.json()["detail"]["field"] == "status"
    sid = _finished(space)
    bad = [({"rating": 0}, "body.rating"), ({"rating": 6}, "body.rating"),
           ({"rating": 3, "comment": "x" * 2001}, "body.comment"), ({}, "body.rating")]
    for body, field in bad:
        response = hub.call("POST", f"/studies/{sid}/feedback", space.alice, json=body)
        assert response.status_code == 422 and response.json()["detail"]["field"] == field
    assert hub.call("POST", f"/studies/{sid}/feedback", space.bob,
                    json={"rating": 1}).status_code == 403
    assert hub.call("POST", f"/studies/{sid}/feedback", hub.operator,
                    json={"rating": 1}).status_code == 403
    assert hub.call("POST", "/studies/999/feedback", space.alice,
                    json={"rating": 1}).status_code == 404
    given = hub.ok("POST", f"/studies/{sid}/feedback", space.alice, 201,
                   json={"rating": 5, "comment": "fast and clear"})
    assert given == {"rating": 5, "comment": "fast and clear", "by": "alice",
                     "at": "2025-03-01T09:00:00Z"}
    second = hub.call("POST", f"/studies/{sid}/feedback", space.alice, json={"rating": 1})
    assert second.status_code == 409 and second.json()["detail"]["field"] == "feedback"
    view = hub.study(space.alice, sid)
    assert view["feedback"]["rating"] == 5 and view["timeline"][-1]["event"] == "feedback"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []
    fail = False

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((body, self.headers.get(SIGNATURE_HEADER, "")))
        self.send_response(500 if type(self).fail else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def _wait_for(handler: type[_Receiver], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(handler.received) < count:
        assert time.monotonic() < deadline, handler.received
        time.sleep(0.01)


def test_status_changes_are_posted_and_signed(
    space_template: Space, tmp_path: Path, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    dead = "http://127.0.0.1:9/unreachable"  # a failing hook must not stop the others
    space = copy_space(space_template, tmp_path, HubSettings(webhooks=[dead, url]))
    sid = _finished(space)
    _wait_for(handler, 2)
    key = VerifyKey(bytes.fromhex(space.hub.ok("GET", "/hub/key", space.alice)["public_key"]))
    events = []
    for body, signature in handler.received:
        key.verify(body, bytes.fromhex(signature))  # raises if forged
        events.append(json.loads(body))
    assert events == [
        {"event": "study.status", "study_id": sid, "status": "running",
         "at": "2025-03-01T09:00:00Z"},
        {"event": "study.status", "study_id": sid, "status": "completed",
         "at": "2025-03-01T09:00:00Z"},
    ]
    space.hub.close()


def test_webhook_failures_are_logged_not_raised(
    space_template: Space, tmp_path: Path, receiver: tuple[str, type[_Receiver]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, handler = receiver
    handler.fail = True
    space = copy_space(space_template, tmp_path, HubSettings(webhooks=[url]))
    study = space.hub.submit(space.alice, nodes=["node-a"])
    assert study["status"] == "running"
    _wait_for(handler, 1)
    deadline = time.monotonic() + 5
    while "answered 500" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    space.hub.close()
