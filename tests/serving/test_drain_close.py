"""DrainingServer's stop over raw sockets: connections only waiting for a client's TLS close are
cut, and nothing else is (an answer still being written to a slow reader is delivered whole)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import uvicorn

from sampan.serving.drain import DrainingServer
from tests.serving.conftest import free_port

BIG = 48 * 2**20  # more than loopback's socket buffers hold: the rest waits in the server


class IdleHost:
    """What DrainingServer asks of a ModelHost: nothing in flight."""

    draining = False
    idle = True


def asgi(answer_after_s: float, size: int):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await asyncio.sleep(answer_after_s)
        headers = [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * size})

    return app


def start(app, port: int, **config) -> tuple[DrainingServer, threading.Thread]:
    server = DrainingServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config),
        IdleHost(),
        close_wait_s=0.2,
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return server, thread


def test_a_slow_reader_gets_its_whole_answer_during_a_stop():
    port = free_port()
    server, thread = start(asgi(0, BIG), port)
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")  # keep-alive
        time.sleep(0.3)  # answered: most of it waits in the server's write buffer
        server.should_exit = True  # what handle_exit does once drained
        time.sleep(1.0)  # five times close_wait_s before the client reads anything
        client.settimeout(10)
        received = b""
        while chunk := client.recv(1 << 20):
            received += chunk
    thread.join(30)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == BIG


def test_a_tls_connection_idle_after_a_late_answer_does_not_hold_the_stop(tmp_path):
    """A request in flight when the stop begins, answered after close_wait_s, to a client that
    then never reads (a pooled connection): its TLS close is cut, not waited for (30 s)."""
    import trustme

    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
    port = free_port()
    server, thread = start(asgi(0.6, 2), port, ssl_certfile=str(pem), ssl_keyfile=str(pem))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    raw = socket.create_connection(("127.0.0.1", port))
    with trusted.wrap_socket(raw, server_hostname="127.0.0.1") as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")  # and never read again
        time.sleep(0.2)
        server.should_exit = True
        thread.join(15)  # the TLS close timeout it must not wait out is 30 s
        assert not thread.is_alive()
