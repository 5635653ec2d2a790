"""Request size limit: an ASGI middleware that refuses bodies above a byte budget with 413.

It checks ``Content-Length`` up front and counts streamed (chunked) bodies as they arrive, so a
client cannot exhaust the hub's memory whichever way it sends.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _reply(limit: int) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"detail": {
        "message": f"request body larger than the hub's limit of {limit:,} bytes",
        "field": "body"}}).encode()
    start = {"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    return start, body


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` (HTTP 413, JSON detail naming ``body``)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        started = replied = False

        async def counted() -> Message:
            # Past the limit: answer 413 here and tell the app the client went away, so it
            # stops reading; whatever it then tries to send is dropped.
            nonlocal seen, replied
            message = await receive()
            if message["type"] == "http.request" and not replied:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    replied = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if replied:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, tracked)

    async def _refuse(self, send: Send) -> None:
        start, body = _reply(self.max_bytes)
        await send(start)
        await send({"type": "http.response.body", "body": body})
