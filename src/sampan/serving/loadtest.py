"""A load generator for model servers: concurrent keep-alive callers, bounded in count and time.

`sampan loadtest URL --model M` asks the server about the model, builds one request (a made-up
input of the model's task, a given input file, or a given JSON body), checks that the server
answers it, then sends it from C callers until N requests were sent or the time is up, and
reports requests/s, latency percentiles and errors by status.

The client is our own asyncio protocol over httptools' response parser with the request's
bytes built once: on a 2-core machine the generator shares the CPU with the server it
measures, and an httpx call costs a few hundred microseconds of Python, about as much as the
server's own work per request, which would halve what the server can show.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httptools
import numpy as np

from sampan.errors import ConfigError, DataError, NotFoundError, SampanError, Unauthorized

MAX_CONCURRENCY = 1024
MAX_DURATION_S = 3600.0
MAX_REQUESTS = 10_000_000
MAX_RATE = 1_000_000
PROTOCOLS = ("native", "v2")


@dataclass
class Target:
    """Where and what to send: one request, built once."""

    base: str  # scheme://host:port[/prefix]
    path: str  # the request's path (with the prefix)
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    secure: ssl.SSLContext | None = None  # for https: one context for every caller

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.base)

    def request_bytes(self) -> bytes:
        parts = self.parts
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "User-Agent: sampan-loadtest",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Report:
    """What a run measured. Latency is over every answered request, whatever its status."""

    url: str
    model: str
    protocol: str
    concurrency: int
    rate: float | None  # requests started per second (open loop); None: closed loop
    requests: int  # asked for
    sent: int
    ok: int  # 2xx answers
    errors: dict[str, int]  # status code (or "timeout", "connection") -> count
    error_samples: dict[str, str]  # the first answer of each error kind
    seconds: float  # the whole run, the last answer or timeout included
    requests_per_s: float  # answered requests (any status) per second, until the last answer
    ok_per_s: float
    latency_ms: dict[str, float | None]  # min, p50, p90, p99, max, mean; None: no answers
    stopped_by: str  # "requests" or "duration"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def latency_summary(seconds: list[float]) -> dict[str, float | None]:
    """min/p50/p90/p99/max/mean in milliseconds (linear interpolation between ranks); None
    (JSON null) when nothing was answered."""
    if not seconds:
        return dict.fromkeys(("min", "p50", "p90", "p99", "max", "mean"))
    ms = np.asarray(seconds) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "min": round(float(ms.min()), 3),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(ms.max()), 3),
        "mean": round(float(ms.mean()), 3),
    }


# -- what to send ------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is: following it would send the API key elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def tls_context(cacert: Path | None) -> ssl.SSLContext:
    """The TLS context of an https run: the system's CAs, or those of cacert (a PEM file,
    for a server whose certificate a private CA signed)."""
    try:
        return ssl.create_default_context(cafile=None if cacert is None else str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--cacert {cacert}: {getattr(exc, 'strerror', None) or exc} (give a PEM file of "
            "CA certificates)."
        ) from None


def _fetch(
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    secure: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """(status, parsed JSON answer) of one GET (or POST with body), for setting up a run."""
    request = urllib.request.Request(url, data=body, headers=headers)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.HTTPSHandler(context=secure))
    try:
        with opener.open(request, timeout=30) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        with exc:  # its connection
            status, text = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise SampanError(
                f"TLS with {url} failed: {reason.verify_message or reason}. For a certificate "
                "a private CA signed, give --cacert CA.pem."
            ) from None
        if isinstance(reason, ssl.SSLError):
            raise SampanError(
                f"TLS with {url} failed: {reason.reason or reason}. Is it an https server "
                "(else give http://)?"
            ) from None
        raise SampanError(
            f"Cannot reach {url}: {reason}. Is the server running (sampan serve)?"
        ) from None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode("utf-8", "replace")[:200]


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        return str(answer.get("error") or answer.get("detail") or answer)
    return str(answer)


def _check(status: int, answer: Any, what: str) -> None:
    if status == 401:
        raise Unauthorized(
            f"{what}: the server wants an API key ({_message(answer)}); pass --api-key or set "
            "SAMPAN_API_KEY."
        )
    if status == 404:
        raise NotFoundError(f"{what}: {_message(answer)}")
    if not 200 <= status < 300:
        raise SampanError(f"{what}: the server answered {status}: {_message(answer)}")


def plan(
    url: str,
    model: str,
    protocol: str = "native",
    input_file: Path | None = None,
    body_file: Path | None = None,
    api_key: str | None = None,
    cacert: Path | None = None,
) -> Target:
    """The request a run sends, checked once against the server (not counted in the run)."""
    from sampan.serving.host import check_model_name
    from sampan.tasks.base import get_task

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not a server address; give one like http://127.0.0.1:8000.")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: choose {' or '.join(PROTOCOLS)}.")
    if input_file is not None and body_file is not None:
        raise ConfigError("Give --input or --body, not both.")
    check_model_name(model)
    if cacert is not None and parts.scheme != "https":
        raise ConfigError(f"--cacert goes with an https:// address, not {url}.")
    secure = tls_context(cacert) if parts.scheme == "https" else None
    fetch = functools.partial(_fetch, secure=secure)
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    prefix = parts.path.rstrip("/")
    if protocol == "v2":
        status, meta = fetch(f"{base}/v2/models/{model}", headers)
        _check(status, meta, f"Model {model!r} at {url}")
        path = f"{prefix}/v2/models/{model}/infer"
        if body_file is not None:
            body = _read_body(body_file)
        else:
            series: list[str] = []
            if any(tensor.get("name") == "series" for tensor in meta.get("inputs") or []):
                status, described = fetch(f"{base}/v1/models/{model}", headers)
                _check(status, described, f"Model {model!r} at {url}")
                series = (described.get("input_details") or {}).get("series") or []
            body = _v2_body(meta, input_file, series)
    else:
        status, described = fetch(f"{base}/v1/models/{model}", headers)
        _check(status, described, f"Model {model!r} at {url}")
        path = f"{prefix}/v1/models/{model}:predict"
        if body_file is not None:
            body = _read_body(body_file)
        else:
            task = get_task(described["task"])
            if input_file is not None:
                instance = task.to_json(_read(input_file))
                how = f"{input_file} is not an input of a {task.name} model; send --body FILE."
            else:
                instance = task.example_json(
                    described["input_shape"], described.get("input_details")
                )
                how = f"sampan cannot make up a {task.name} input; send --input or --body FILE."
            if instance is None:
                raise DataError(how)
            body = json.dumps({"instances": [instance]}).encode()
    target = Target(base, path, body, headers, secure)
    origin = f"{parts.scheme}://{parts.netloc}"
    status, answer = fetch(origin + path, headers, body)
    _check(status, answer, f"The request to load-test with ({origin + path})")
    return target


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror}.") from None


def _read_body(path: Path) -> bytes:
    body = _read(path)
    try:
        json.loads(body)
    except ValueError:
        raise DataError(f"{path} is not a JSON request body.") from None
    return body


def _v2_body(meta: dict[str, Any], input_file: Path | None, series: list[str]) -> bytes:
    """An Open Inference v2 request of one row of seeded noise for the model's one input
    (and, for a model trained per series, a "series" tensor naming the first of series)."""
    if input_file is not None:
        raise ConfigError("--input goes with --protocol native; for v2 send --body FILE.")
    inputs = meta.get("inputs") or []
    ids = [{"name": "series", "shape": [1], "datatype": "BYTES", "data": series[:1]}]
    if series and [tensor.get("name") for tensor in inputs] == ["input", "series"]:
        inputs = inputs[:1]
    else:
        ids = []
    if len(inputs) != 1 or inputs[0].get("datatype") != "FP32" or -1 in inputs[0]["shape"][1:]:
        raise ConfigError(
            "sampan makes up v2 inputs for models of one FP32 input of fixed shape only; "
            "send --body FILE (or use --protocol native)."
        )
    shape = [1, *inputs[0]["shape"][1:]]
    data = np.random.default_rng(0).standard_normal(int(np.prod(shape))).round(4)
    tensor = {"name": inputs[0]["name"], "shape": shape, "datatype": "FP32"}
    return json.dumps({"inputs": [{**tensor, "data": data.tolist()}, *ids]}).encode()


# -- the run -----------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed by httptools."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bool, bytes]] | None = None
        self.body: list[bytes] = []
        self.lost: asyncio.Future[None] = loop.create_future()  # done once fully closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unreadable answer: {exc}"))

    def on_body(self, body: bytes) -> None:
        # only an error's body is shown (its first 1000 bytes are enough); an answer's is not
        if self.parser.get_status_code() >= 300 and sum(map(len, self.body)) < 1000:
            self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.body = b"".join(self.body), []
        if waiter is not None and not waiter.done():
            waiter.set_result(
                (self.parser.get_status_code(), self.parser.should_keep_alive(), body)
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError(str(exc) if exc else "the server closed the connection"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def call(self, payload: bytes) -> tuple[int, bool, bytes]:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.transport.write(payload)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Run:
    """The shared state of one run's callers. Closed loop (rate None): a caller sends its next
    request as soon as its last was answered. Open loop: request i is due at started + i / rate
    whether or not earlier ones were answered, and its latency counts from when it was due, so a
    server that falls behind shows it in the latency (waiting for a free caller included)
    rather than in a quietly lower sending rate."""

    requests: int
    started: float
    deadline: float
    rate: float | None = None
    clock: Callable[[], float] = time.perf_counter
    sent: int = 0
    ok: int = 0
    last_answer: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    stopped_by: str = "requests"

    def take(self) -> float | None:
        """When the caller's next request is due (it is counted as sent), or None: stop."""
        if self.sent >= self.requests:
            return None
        now = self.clock()
        due = now if self.rate is None else self.started + self.sent / self.rate
        if max(now, due) >= self.deadline:
            self.stopped_by = "duration"
            return None
        self.sent += 1
        return due

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.samples.setdefault(kind, message[:300])


async def _caller(
    target: Target, payload: bytes, run: _Run, timeout: float, secure: ssl.SSLContext | None
) -> list[_Connection]:
    """One caller's requests; returns its connections still closing."""
    parts = target.parts
    host, port = parts.hostname or "", parts.port or (443 if secure else 80)
    connection: _Connection | None = None
    dropped: list[_Connection] = []
    while (due := run.take()) is not None:
        if due >= time.perf_counter():
            # on time: wait until it is due, then count from the moment it is sent (the event
            # loop's timers wake up to a millisecond early or late: neither is the server's)
            while (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            started = time.perf_counter()
        else:  # late (every caller was busy): count from when it was due
            started = due
        try:
            if connection is None or not connection.open:
                connection = await _connect(host, port, secure, timeout)
            status, keep_alive, body = await asyncio.wait_for(connection.call(payload), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            run.error("timeout", f"no answer within {timeout:g} s")
            _drop(connection, dropped)
            connection = None
            continue
        except OSError as exc:  # ConnectionError included: refused, reset, closed
            run.error("connection", str(exc) or type(exc).__name__)
            _drop(connection, dropped)
            connection = None
            await asyncio.sleep(0.01)  # a server that is not there is not hammered
            continue
        answered = time.perf_counter()
        run.latencies.append(answered - started)
        run.last_answer = answered
        if 200 <= status < 300:
            run.ok += 1
        else:
            run.error(str(status), body.decode("utf-8", "replace"))
        if not keep_alive:
            _drop(connection, dropped)
            connection = None
    _drop(connection, dropped)
    return dropped


async def _connect(
    host: str, port: int, secure: ssl.SSLContext | None, timeout: float
) -> _Connection:
    loop = asyncio.get_running_loop()
    _, connection = await asyncio.wait_for(
        loop.create_connection(lambda: _Connection(loop), host, port, ssl=secure), timeout
    )
    return connection


def _drop(connection: _Connection | None, dropped: list[_Connection]) -> None:
    """Close connection, kept in dropped (with the others still closing) until it is."""
    if connection is not None:
        connection.close()
        dropped[:] = [c for c in dropped if not c.lost.done()]
        dropped.append(connection)


async def _run(
    target: Target,
    model: str,
    protocol: str,
    concurrency: int,
    requests: int,
    duration: float,
    timeout: float,
    rate: float | None,
) -> Report:
    payload = target.request_bytes()
    secure = target.secure  # one TLS context for every caller: each costs ~30 ms to load
    started = time.perf_counter()
    run = _Run(requests, started, started + duration, rate)
    callers = (_caller(target, payload, run, timeout, secure) for _ in range(concurrency))
    dropped = await asyncio.gather(*callers)
    seconds = max(time.perf_counter() - started, 1e-9)
    # a TLS connection's close (its close_notify) runs on the loop: let it end before the
    # loop does (not counted in the run's time), or it is left half closed and warned about
    closing = [c.lost for connections in dropped for c in connections if not c.lost.done()]
    if closing:
        await asyncio.wait(closing, timeout=1)
    answered = len(run.latencies)
    # per second of the time answers came in: a request that ends in a timeout after the
    # last answer must not make the rate look lower
    window = max(run.last_answer - started, 1e-9) if answered else seconds
    return Report(
        url=target.base,
        model=model,
        protocol=protocol,
        concurrency=concurrency,
        rate=rate,
        requests=requests,
        sent=run.sent,
        ok=run.ok,
        errors=dict(sorted(run.errors.items())),
        error_samples=dict(sorted(run.samples.items())),
        seconds=round(seconds, 3),
        requests_per_s=round(answered / window, 1),
        ok_per_s=round(run.ok / window, 1),
        latency_ms=latency_summary(run.latencies),
        stopped_by=run.stopped_by,
    )


def check_bounds(
    concurrency: int, requests: int, duration: float, timeout: float, rate: float | None = None
) -> None:
    """Every problem with a run's bounds at once, as one ConfigError."""
    problems = []
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        problems.append(f"--concurrency must be 1 to {MAX_CONCURRENCY} (got {concurrency})")
    if not 1 <= requests <= MAX_REQUESTS:
        problems.append(f"--requests must be 1 to {MAX_REQUESTS:,} (got {requests})")
    if not 0 < duration <= MAX_DURATION_S:
        problems.append(f"--duration must be over 0 and at most {MAX_DURATION_S:g} s")
    if not timeout > 0:
        problems.append(f"--timeout must be over 0 s (got {timeout})")
    if rate is not None and not 0 < rate <= MAX_RATE:
        problems.append(f"--rate must be over 0 and at most {MAX_RATE:,} requests/s (got {rate})")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def load_test(
    url: str,
    model: str,
    *,
    concurrency: int = 8,
    requests: int = 1000,
    duration: float = 60.0,
    timeout: float = 30.0,
    rate: float | None = None,
    protocol: str = "native",
    input_file: Path | None = None,
    body_file: Path | None = None,
    api_key: str | None = None,
    cacert: Path | None = None,
) -> Report:
    """Send requests to model at url from concurrency callers until requests were sent or
    duration seconds passed (answers still awaited, each for up to timeout seconds); with
    rate, start that many requests a second (open loop) instead of one whenever a caller's
    last was answered."""
    check_bounds(concurrency, requests, duration, timeout, rate)
    target = plan(url, model, protocol, input_file, body_file, api_key, cacert)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # Windows: the standard loop
        runner = asyncio.run
    return runner(  # type: ignore[no-any-return]
        _run(target, model, protocol, concurrency, requests, duration, timeout, rate)
    )
