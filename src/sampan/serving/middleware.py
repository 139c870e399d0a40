"""Plain ASGI middleware of the server: body-size limit (and compressed bodies' inflation) and
access log + request metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import zlib
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


# Content-Encoding of request bodies and of answers -> zlib's wbits (tritonclient's
# request_compression_algorithm sends gzip or deflate, as Triton accepts). HTTP's "deflate" is
# the zlib format; a raw deflate stream (some clients send that) is tried when the zlib header
# is not there.
INLINE_INFLATE = 64 * 1024  # compressed bytes inflated on the event loop; more go to a thread
_INFLATE = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}


class BodyLimit:
    """413 for a body over max_bytes: by Content-Length at once, else while it streams. A body
    sent gzip- or deflate-encoded is inflated here, to at most max_bytes (a small compressed
    body can hold gigabytes), and reaches the app as a plain body; other encodings get 415.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = {"error": f"The request body is over the {self.max_bytes:,}-byte limit."}
        declared, encoding, chunked = None, None, False
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit():
                declared = int(value)
            elif key == b"transfer-encoding":  # some servers let it win over the length
                chunked = True
            elif key == b"content-encoding" and value.strip().lower() != b"identity":
                encoding = value.strip().lower()
        if chunked:
            declared = None
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, message)
            return
        if encoding is not None:
            await self._inflated(scope, receive, send, encoding, message)
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

    async def _inflated(
        self, scope: Scope, receive: Receive, send: Send, encoding: bytes, too_large: dict[str, Any]
    ) -> None:
        """The app called with the body inflated, or a 4xx answer."""
        wbits = _INFLATE.get(encoding)
        if wbits is None:
            name = encoding.decode("latin-1")
            await _send_json(
                send,
                415,
                {
                    "error": f"Content-Encoding {name!r} is not supported; send gzip, deflate or "
                    "an uncompressed body."
                },
            )
            return
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # the caller hung up: nobody to answer
            chunks.append(msg.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await _send_json(send, 413, too_large)
                return
            if not msg.get("more_body"):
                break
        data = b"".join(chunks)
        try:
            if len(data) <= INLINE_INFLATE:
                body = inflate(data, wbits, self.max_bytes)
            else:  # megabytes: off the event loop
                body = await asyncio.to_thread(inflate, data, wbits, self.max_bytes)
        except TooLarge:
            await _send_json(
                send,
                413,
                {"error": f"The request body inflates to over the {self.max_bytes:,}-byte limit."},
            )
            return
        except zlib.error as exc:
            name = encoding.decode("latin-1")
            await _send_json(
                send, 400, {"error": f"The request body is not valid {name} data ({exc})."}
            )
            return
        drop = (b"content-encoding", b"content-length", b"transfer-encoding")
        headers = [(k, v) for k, v in scope["headers"] if k not in drop]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # what comes after the body: a disconnect
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


MAX_GZIP_MEMBERS = 64  # each further member copies the rest of the body: bounded work


def inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """data decompressed (every gzip member of it, up to MAX_GZIP_MEMBERS; deflate as zlib,
    else raw), TooLarge past limit bytes, zlib.error for a broken or truncated stream. An
    empty body stays empty; zero bytes after the last gzip member (padding) are ignored."""
    if not data:
        return b""
    out: list[bytes] = []
    size = 0
    while True:
        if len(out) == MAX_GZIP_MEMBERS:
            raise zlib.error(f"more than {MAX_GZIP_MEMBERS} gzip members")
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(data, limit + 1 - size)
        except zlib.error:
            if wbits != zlib.MAX_WBITS or out:  # (a raw stream's wbits is -MAX_WBITS)
                raise
            wbits = -zlib.MAX_WBITS  # not zlib-wrapped: a raw deflate stream
            continue
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise TooLarge
        out.append(part)
        if not inflater.eof:
            raise zlib.error("the stream ends early")
        data = inflater.unused_data
        if not data.strip(b"\0") or wbits != 16 + zlib.MAX_WBITS:  # else more gzip members
            return b"".join(out)


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


# Answers of at least COMPRESS_MIN_BYTES are compressed for a caller that accepts gzip or
# deflate (browsers, curl --compressed, requests, httpx, tritonclient's
# response_compression_algorithm); smaller ones would gain a few bytes for the work.
COMPRESS_MIN_BYTES = 4096
# Level 1: 32 embeddings of 384 floats as JSON (254 KB) shrink 2.07x in 2.5 ms, against 2.19x
# in 13.7 ms at level 5 (2-core x86); 32 rows of 10 scores (6.6 KB) 1.98x in 0.06 ms.
COMPRESS_LEVEL = 1
# Answer bytes compressed on the event loop; more go to a thread (an event loop that spends
# about 0.5 ms a request should not stall for milliseconds).
INLINE_DEFLATE = 32 * 1024
_COMPRESSED_TYPES = (b"image/", b"video/", b"audio/", b"application/gzip", b"application/zip")


def accepted_coding(headers: list[tuple[bytes, bytes]]) -> str | None:
    """gzip or deflate, whichever Accept-Encoding ranks higher (gzip on a tie); None when it
    names neither, or only with q=0."""
    best, best_q = None, 0.0
    for key, value in headers:
        if key != b"accept-encoding":
            continue
        for part in value.decode("latin-1").lower().split(","):
            coding, _, params = part.partition(";")
            coding = coding.strip()
            if coding == "x-gzip":
                coding = "gzip"
            if coding not in ("gzip", "deflate"):
                continue
            q = 1.0
            for param in params.split(";"):
                name, _, number = param.partition("=")
                if name.strip() == "q":
                    try:
                        q = float(number)
                    except ValueError:
                        q = 0.0
            if q > best_q or (q == best_q and coding == "gzip" and best != "gzip"):
                best, best_q = coding, q
    return best if best_q > 0 else None


def deflate(body: bytes, coding: str) -> bytes:
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, _INFLATE[coding.encode()])
    return compressor.compress(body) + compressor.flush()


class CompressAnswers:
    """gzip or deflate for an answer of at least min_bytes sent as one body, to a caller whose
    Accept-Encoding takes it; everything else passes as it is (a streamed answer, one already
    encoded, a byte range, images). Written here rather than Starlette's GZipMiddleware,
    which wraps every answer (a caller that asks for nothing too: the inference routes' hot
    path), knows gzip only (tritonclient asks for deflate too) and reads "gzip;q=0" as yes."""

    def __init__(self, app: ASGIApp, min_bytes: int = COMPRESS_MIN_BYTES) -> None:
        self.app, self.min_bytes = app, min_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        coding = accepted_coding(scope["headers"]) if scope["type"] == "http" else None
        if coding is None:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        passing = False  # the answer goes out as it is

        async def compressing(msg: Message) -> None:
            nonlocal start, passing
            if msg["type"] == "http.response.start":
                headers = msg.get("headers", ())
                kind = next((v for k, v in headers if k == b"content-type"), b"")
                passing = (
                    msg["status"] == 206  # a byte range of the uncompressed file
                    or any(k == b"content-encoding" for k, _ in headers)
                    or kind.startswith(_COMPRESSED_TYPES)
                )
                if passing:
                    await send(msg)
                else:
                    start = msg  # held until the body shows whether it is worth compressing
                return
            if msg["type"] != "http.response.body" or passing or start is None:
                await send(msg)
                return
            held, start = start, None
            body = msg.get("body", b"")
            if msg.get("more_body") or len(body) < self.min_bytes:
                passing = True  # streamed (its length is unknown) or small: as it is
                await send(held)
                await send(msg)
                return
            if len(body) <= INLINE_DEFLATE:
                packed = deflate(body, coding)
            else:  # megabytes: off the event loop
                packed = await asyncio.to_thread(deflate, body, coding)
            keep = (b"content-length", b"vary")
            vary = [v for k, v in held.get("headers", ()) if k == b"vary"]
            headers = [(k, v) for k, v in held.get("headers", ()) if k not in keep]
            headers += [
                (b"content-encoding", coding.encode()),
                (b"content-length", str(len(packed)).encode()),
                (b"vary", b", ".join([*vary, b"Accept-Encoding"])),
            ]
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": packed})

        await self.app(scope, receive, compressing)
