"""The server's front door: API keys, per-key rate limits and the request-body size cap.

An ASGI middleware, so oversized bodies are refused while they stream in
(413), before any JSON parsing, and requests beyond `max_inflight` at once are
answered 503 at the door, cheaply, so a flood of connections cannot pile up work
or memory (uvicorn's connection limit stays a higher backstop). `/health`, the web page and its static files
stay open; everything else needs `Authorization: Bearer KEY` (or `x-api-key`)
when keys are set. Rate limiting is a token bucket per key (per client address
when no keys are set): `rate_limit_per_min` requests a minute, bursting to the
same number, answered 429 with Retry-After beyond it.
"""
from __future__ import annotations

import hmac
import json
import threading
import time

OPEN_PATHS = ("/health", "/", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)


def _error(status: int, message: str, type_: str, code: str | None = None) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class RateLimiter:
    def __init__(self, per_min: int) -> None:
        self.per_min = per_min
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, last time)
        self._lock = threading.Lock()

    def allow(self, who: str) -> float:
        """0.0 when allowed, else seconds until the next request would be."""
        if self.per_min <= 0:
            return 0.0
        now = time.monotonic()
        rate = self.per_min / 60.0
        with self._lock:
            if len(self._buckets) > 10_000:  # forget idle clients; memory stays bounded
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 120}
            tokens, last = self._buckets.get(who, (float(self.per_min), now))
            tokens = min(float(self.per_min), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[who] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[who] = (tokens - 1.0, now)
            return 0.0


class Guard:
    def __init__(self, app, api_keys: list[str], max_body_bytes: int, rate_limit_per_min: int,
                 max_inflight: int = 0) -> None:
        self.app = app
        self.max_inflight = max_inflight  # 0 = no limit
        self.inflight = 0
        self.keys = [k.encode() for k in api_keys if k]
        self.max_body = max_body_bytes
        self.limiter = RateLimiter(rate_limit_per_min)

    def _key(self, scope) -> str | None:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip().decode("latin-1")
        key = headers.get(b"x-api-key")
        return key.decode("latin-1") if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        key = self._key(scope)
        if self.keys:
            given = (key or "").encode()
            if not any(hmac.compare_digest(given, k) for k in self.keys):
                msg = "missing API key: send Authorization: Bearer KEY" if key is None else "invalid API key"
                return await _send(send, *_error(401, msg, "authentication_error", "invalid_api_key"))
        who = key if self.keys else (scope.get("client") or ("?",))[0]
        wait = self.limiter.allow(who)
        if wait:
            status, body = _error(429, f"rate limit of {self.limiter.per_min} requests per minute exceeded; "
                                       f"retry in {wait:.1f} s", "rate_limit_error", "rate_limit_exceeded")
            return await _send(send, status, body, [(b"retry-after", str(int(wait) + 1).encode())])
        if self.max_inflight and self.inflight >= self.max_inflight:
            status, body = _error(503, f"server busy: {self.inflight} requests in progress; retry later",
                                  "server_overloaded", "too_many_requests_in_flight")
            return await _send(send, status, body, [(b"retry-after", b"1")])
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await _send(send, *self._too_big())
        received = 0

        async def guarded_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return msg

        self.inflight += 1
        try:
            await self.app(scope, guarded_receive, send)
        except _BodyTooLarge:
            await _send(send, *self._too_big())
        finally:
            self.inflight -= 1

    def _too_big(self) -> tuple[int, bytes]:
        return _error(413, f"request body is over this server's limit of {self.max_body} bytes",
                      "invalid_request_error", "request_too_large")


class _BodyTooLarge(Exception):
    pass


async def _send(send, status: int, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
