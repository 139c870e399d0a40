"""Plain ASGI middleware of the server: body-size limit and access log + request metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sampan.serving.metrics import Metrics

access_log = logging.getLogger("sampan.access")
server_log = logging.getLogger("sampan.server")

# A caller's (or a proxy's) X-Request-ID is kept when it is 1-128 visible ASCII characters;
# otherwise, or without one, the server makes one up.
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's X-Request-ID, or a new one (32 hex digits)."""
    for key, value in headers:
        if key == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class TooLarge(Exception):
    """Raised from BodyLimit's receive when a streamed body passes the limit."""


class BodyLimit:
    """413 for a body over max_bytes: by Content-Length at once, else while it streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = {"error": f"The request body is over the {self.max_bytes:,}-byte limit."}
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit():
                declared = int(value)
            elif key == b"transfer-encoding":  # some servers let it win over the length
                declared = None
                break
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, message)
            return
        if declared is not None:
            # The server reads exactly Content-Length bytes as this body (more would be the
            # next request), so a declared length within the limit needs no watching.
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise TooLarge
            return msg

        started = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except TooLarge:
            if not started:
                await _send_json(send, 413, message)


class AccessLog:
    """One JSON log line and the request metrics for every HTTP request, and its request id
    (the caller's X-Request-ID, or a new one) in the log line, in the answer's X-Request-ID
    header and in the request's state."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})
        state["request_id"] = rid = request_id(scope["headers"])

        answering = False

        async def capture(msg: Message) -> None:
            nonlocal status, answering
            if msg["type"] == "http.response.start":
                status, answering = msg["status"], True
                headers = [*msg.get("headers", ()), (b"x-request-id", rid.encode("ascii"))]
                msg = {**msg, "headers": headers}
            await send(msg)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            if answering:  # too late for an answer of our own: the server closes the call
                raise
            # A bug, not the caller's fault: its traceback goes to the log under the request's
            # id, and the caller gets a 500 that carries the id (and nothing of the error).
            server_log.exception("Unhandled error in request %s (%s)", rid, scope["path"])
            await _send_json(capture, 500, {"error": f"Internal server error (request id {rid})."})
        finally:
            seconds = time.perf_counter() - started
            path: str = scope["path"]
            protocol = "v2" if path.startswith("/v2/") else "v1" if path.startswith("/v1/") else "-"
            model = state.get("model", "-")
            if protocol != "-":
                self.metrics.requests.labels(model, protocol, str(status)).inc()
                if model != "-":
                    self.metrics.latency.labels(model, protocol).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "ts": round(time.time(), 3),
                            "method": scope["method"],
                            "path": path,
                            "status": status,
                            "ms": round(seconds * 1000, 2),
                            "model": model,
                            "client": (scope.get("client") or ["-"])[0],
                            "request_id": rid,
                        }
                    )
                )
