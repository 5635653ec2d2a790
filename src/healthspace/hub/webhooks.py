"""Study status webhooks: signed POSTs to configured URLs, delivered off the request thread.

Each event body is canonical JSON; ``X-Healthspace-Signature`` is the hub key's Ed25519
signature over exactly those bytes (hex), so a receiver verifies with the key from
``GET /api/v1/hub/key``. Delivery is best effort: one attempt per URL, a short timeout,
failures logged and never raised. One worker thread keeps events in commit order; it exits
when idle and is restarted by the next event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import httpx
from nacl.signing import SigningKey

from healthspace.core.canonical import canonical_json

log = logging.getLogger("healthspace.hub.webhooks")

SIGNATURE_HEADER = "X-Healthspace-Signature"
IDLE_SECONDS = 5.0


def sign_body(body: bytes, key: SigningKey) -> str:
    return key.sign(body).signature.hex()


class WebhookSender:
    """Queues events and POSTs them, in order, from one background thread."""

    def __init__(
        self, urls: list[str], signing_key: Callable[[], SigningKey], timeout: float = 5.0
    ) -> None:
        self.urls = list(urls)
        self._signing_key = signing_key
        self._timeout = timeout
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every URL; returns at once."""
        if not self.urls:
            return
        self._queue.put(event)
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="healthspace-webhooks", daemon=True
                )
                self._worker.start()

    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        try:
            body = canonical_json(event)
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_body(body, self._signing_key()),
            }
        except Exception:  # a broken key must not kill the worker
            log.exception("cannot sign webhook event %s", event)
            return
        for url in self.urls:
            try:
                response = httpx.post(url, content=body, headers=headers, timeout=self._timeout)
                if response.status_code >= 400:
                    log.warning("webhook %s answered %s", url, response.status_code)
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed: %s", url, exc)
