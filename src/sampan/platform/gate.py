"""The platform's gate in front of the server: API keys, scopes, rate limits, quotas and usage
metering, as one plain ASGI middleware in the server's middleware list.

    401  no key, or an unknown, revoked or expired one
    403  a key without the scope for this call (predict:<model>, admin)
    429  a rate limit or quota used up, with Retry-After and X-RateLimit-* headers

Open paths (health, metrics, the OpenAPI document) pass without a key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sampan.errors import Forbidden, RateLimited, SampanError, Unauthorized
from sampan.platform.keys import KeyInfo, Keys
from sampan.platform.limits import Limiter
from sampan.platform.metering import UsageRecorder
from sampan.platform.sessions import CSRF_HEADER, Session, Sessions, cookie_value

# The console signs its own users in (sessions.py) and checks them on every page.
OPEN_PATHS = ("/v2/health/", "/metrics", "/openapi.json", "/docs", "/console/")
BODY_MODEL_PATHS = ("/v1/embeddings",)  # OpenAI-style: {"model": ...} in the body
BODY_MODEL = "predict:<body>"
KEY_CACHE_SECONDS = 5.0  # a revoked key is refused by every process within this time


def required_scope(path: str) -> str | None:
    """What a path needs: None (open), 'any' valid key, 'admin', or 'predict:<model>'."""
    if path in ("/", "/console") or path.startswith(OPEN_PATHS):
        return None
    if path.startswith(("/v1/admin/", "/v2/repository/")):  # Triton's load/unload too
        return "admin"
    for verb in (":predict", ":stream"):
        if path.startswith("/v1/models/") and path.endswith(verb):
            return "predict:" + path[len("/v1/models/") : -len(verb)]
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "predict:" + path[len("/v2/models/") : -len("/infer")].split("/")[0]
    if path in BODY_MODEL_PATHS:
        return BODY_MODEL  # the model is named in the body: the handler asks to authorize it
    return "any"


def presented_key(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = bytes(value).decode("latin-1").partition(" ")
            if kind.lower() == "bearer":
                return token.strip()
        elif name == b"x-api-key":
            return str(bytes(value).decode("latin-1")).strip()
    return ""


async def _cached(cache: dict[str, tuple[Any, float]], key: str, load: Callable[[], Any]) -> Any:
    """load()'s answer (run in a thread, off the event loop), kept for KEY_CACHE_SECONDS;
    an error is not kept. At most 10,000 answers are kept."""
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and hit[1] > now:
        return hit[0]
    value = await asyncio.to_thread(load)
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (value, now + KEY_CACHE_SECONDS)
    return value


@dataclass
class Gate:
    """Keys, limiter and recorder shared by the middleware. open=True: no keys asked for
    (local development), calls still metered."""

    keys: Keys | None
    limiter: Limiter | None
    recorder: UsageRecorder
    open: bool = False
    sessions: Sessions | None = None  # the console's sign-ins, in the same database
    _cache: dict[str, tuple[KeyInfo, float]] = field(default_factory=dict)
    _session_cache: dict[str, tuple[Session | None, float]] = field(default_factory=dict)

    async def authenticate_call(self, scope: Scope) -> KeyInfo:
        """The key behind a call: an API key in its headers, else a console session (its
        cookie and, against cross-site requests, its CSRF token in a header)."""
        presented = presented_key(scope)
        if presented:
            return await self.authenticate(presented)
        session = await self.session(cookie_value(scope["headers"]))
        if session is None:
            return await self.authenticate("")
        token = next((v for k, v in scope["headers"] if k == CSRF_HEADER.encode()), b"")
        if not hmac.compare_digest(token, session.csrf.encode()):
            raise Unauthorized(
                "A console session's call must carry its CSRF token in X-CSRF-Token; "
                "reload the console page."
            )
        return await self.key_by_prefix(session.prefix)

    async def session(self, session_id: str | None) -> Session | None:
        """The live console session with this id (looked up at most every few seconds: one
        ended in another process stops working within KEY_CACHE_SECONDS)."""
        if not session_id or self.sessions is None:
            return None
        sessions = self.sessions
        found: Session | None = await _cached(
            self._session_cache, session_id, lambda: sessions.get(session_id)
        )
        return found

    async def end_session(self, session_id: str) -> None:
        if self.sessions is not None:
            await asyncio.to_thread(self.sessions.end, session_id)
        self._session_cache.pop(session_id, None)

    def forget(self, prefix: str) -> None:
        """Drop a key from this process's cache (after it was revoked or its limits changed
        here, so this process applies the change at once; others within KEY_CACHE_SECONDS)."""
        for presented, (info, _) in list(self._cache.items()):
            if info.prefix == prefix:
                self._cache.pop(presented, None)

    async def key_by_prefix(self, prefix: str) -> KeyInfo:
        """A console session's key, looked up again (cached as keys are): revoked, it fails."""
        keys = self.keys
        assert keys is not None
        info: KeyInfo = await _cached(self._cache, "session:" + prefix, lambda: keys.info(prefix))
        return info

    async def authenticate(self, presented: str) -> KeyInfo:
        if not presented:
            raise Unauthorized("Send an API key as 'Authorization: Bearer smp_...'.")
        keys = self.keys
        assert keys is not None
        info: KeyInfo = await _cached(self._cache, presented, lambda: keys.verify(presented))
        if info.expires_at is not None and info.expires_at.timestamp() <= time.time():
            raise Unauthorized(f"API key {info.prefix} has expired.")
        return info

    def middleware(self) -> Any:
        from starlette.middleware import Middleware

        return Middleware(PlatformMiddleware, gate=self)

    def routers(self) -> list[Any]:
        from sampan.platform.admin_api import router

        return [router(self.recorder.db)]

    async def start(self) -> None:
        await self.recorder.start()

    async def close(self) -> None:
        await self.recorder.close()
        if self.limiter is not None:
            await self.limiter.close()
        self.recorder.db.close()


def split_limits(key: KeyInfo, model: str) -> tuple[KeyInfo, KeyInfo | None]:
    """(the limits charged before the call, those charged once its units are known).

    The rate limit counts calls, so it is always charged up front. Quotas count calls too, and
    go with it, unless they count the task's units (images, tokens): then they are charged
    when the handler has decoded the input. Quotas restricted to a model pattern do not count
    calls to other models."""
    has_quota = key.quota_day is not None or key.quota_month is not None
    if not has_quota or not key.quotas_apply_to(model):
        return replace(key, quota_day=None, quota_month=None), None
    if key.quota_units == "units":
        return replace(key, quota_day=None, quota_month=None), replace(key, rate_per_s=None)
    return key, None


def _over(key: KeyInfo, reason: str) -> str:
    period = {"rate": "rate limit", "day": "daily quota"}.get(reason, "monthly quota")
    return f"Key {key.prefix} is over its {period}; retry later."


def _admission(limiter: Limiter, key: KeyInfo, headers: dict[str, str]) -> Any:
    async def admit(units: int) -> None:
        decision = await limiter.charge(key, units)
        headers.update(decision.headers)
        if not decision.allowed:
            raise RateLimited(
                _over(key, decision.reason) + f" ({units} units asked)",
                decision.retry_after,
                decision.headers,
            )

    return admit


def _authorizer(limiter: Limiter, key: KeyInfo, headers: dict[str, str]) -> Any:
    """For routes that name the model in the body: check the scope, then charge the limits
    (the rate and request quotas, then quotas in units) once the handler knows both."""

    async def authorize(model: str, units: int) -> None:
        key.check(f"predict:{model}")
        upfront, later = split_limits(key, model)
        await _admission(limiter, upfront, headers)(1)
        if later is not None:
            await _admission(limiter, later, headers)(units)

    return authorize


def _auditor(db: Any, key: KeyInfo) -> Any:
    async def audit(action: str, target: str) -> None:
        await asyncio.to_thread(write_audit, db, f"key:{key.prefix}", action, target)

    return audit


def write_audit(db: Any, actor: str, action: str, target: str, **detail: Any) -> None:
    from sampan.platform.schema import AuditEntry

    with db.session() as session:
        session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


async def _answer(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class PlatformMiddleware:
    """Authenticate, authorise, limit and meter every call that is not on an open path."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = required_scope(scope["path"])
        if need is None:
            await self.app(scope, receive, send)
            return
        gate, started = self.gate, time.perf_counter()
        by_body = need == BODY_MODEL
        model = need.partition(":")[2] if need.startswith("predict:") and not by_body else ""
        key: KeyInfo | None = None
        extra: dict[str, str] = {}
        admit: Any = None
        try:
            if not gate.open:
                key = await gate.authenticate_call(scope)
                if need not in ("any", BODY_MODEL):
                    key.check(need)
                if model and gate.limiter is not None:
                    upfront, later = split_limits(key, model)
                    decision = await gate.limiter.charge(upfront)
                    extra.update(decision.headers)
                    if not decision.allowed:
                        self._meter(key, model, 429, started, scope)
                        await _answer(send, 429, _over(key, decision.reason), extra)
                        return
                    if later is not None:
                        admit = _admission(gate.limiter, later, extra)
        except Unauthorized as exc:
            await _answer(send, 401, str(exc), {"WWW-Authenticate": "Bearer"})
            return
        except Forbidden as exc:
            self._meter(key, model or "-", 403, started, scope)
            await _answer(send, 403, str(exc), {})
            return
        except SampanError as exc:  # the platform database is unreachable, say
            await _answer(send, 503, str(exc), {"Retry-After": "5"})
            return
        state = scope.setdefault("state", {})
        state["api_key"] = key
        state["admin"] = need == "admin" and key is not None
        if admit is not None:
            state["admit"] = admit  # the handler calls it with the call's units, once decoded
        if by_body and key is not None and gate.limiter is not None:
            state["authorize"] = _authorizer(gate.limiter, key, extra)
        if key is not None and need == "admin" and gate.keys is not None:
            state["audit"] = _auditor(gate.keys.db, key)
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if extra:
                    headers = list(message.get("headers", []))
                    present = {bytes(name).lower() for name, _ in headers}
                    for name, value in extra.items():
                        if name.lower().encode() not in present:  # a 429 has its own
                            headers.append((name.lower().encode(), value.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if model or by_body:
                self._meter(key, model or str(state.get("model", "-")), status, started, scope)

    def _meter(
        self, key: KeyInfo | None, model: str, status: int, started: float, scope: Scope
    ) -> None:
        state: dict[str, Any] = scope.get("state", {})
        self.gate.recorder.record(
            app=key.app if key else "-",
            key_prefix=key.prefix if key else "-",
            model=model,
            status=status,
            latency_ms=(time.perf_counter() - started) * 1000,
            units=int(state.get("units", 0)),
            version=state.get("version"),
        )


def build_gate(
    db: Any, redis_url: str | None = None, open: bool = False, interval: float = 1.0
) -> Gate:
    """The gate over a platform database; limits through Redis when redis_url is given."""
    from sampan.platform.limits import DatabaseLimiter, RedisLimiter

    limiter: Limiter = RedisLimiter(redis_url) if redis_url else DatabaseLimiter(db)
    return Gate(Keys(db, actor="server"), limiter, UsageRecorder(db, interval), open, Sessions(db))
