"""The server's front door (keys, rate limit, body cap) on a minimal ASGI app: control flow only.

The live-server tests (test_server.py) check the same guard in front of the real model."""
from __future__ import annotations

import asyncio

import httpx

from groundup.server.guard import Guard, RateLimiter


async def _echo(scope, receive, send):
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _run(app, method: str, path: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.request(method, path, **kw)
    return asyncio.run(go())


def test_keys_open_paths_and_body_cap():
    app = Guard(_echo, ["k1", "k2"], max_body_bytes=100, rate_limit_per_min=0)
    assert _run(app, "GET", "/health").status_code == 200
    assert _run(app, "GET", "/static/app.js").status_code == 200
    r = _run(app, "POST", "/v1/chat/completions")
    assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
    assert _run(app, "POST", "/v1/x", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert _run(app, "POST", "/v1/x", headers={"Authorization": "Bearer k2"}).status_code == 200
    assert _run(app, "POST", "/v1/x", headers={"x-api-key": "k1"}).status_code == 200
    r = _run(app, "POST", "/v1/x", headers={"x-api-key": "k1"}, content=b"a" * 101)
    assert r.status_code == 413 and "100 bytes" in r.json()["error"]["message"]

    async def chunks():  # no content-length: the cap applies while the body streams in
        for _ in range(5):
            yield b"a" * 30
    r = _run(app, "POST", "/v1/x", headers={"x-api-key": "k1"}, content=chunks())
    assert r.status_code == 413


def test_rate_limit_per_key():
    app = Guard(_echo, ["a", "b"], max_body_bytes=1000, rate_limit_per_min=3)
    codes = [_run(app, "POST", "/v1/x", headers={"x-api-key": "a"}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert _run(app, "POST", "/v1/x", headers={"x-api-key": "b"}).status_code == 200  # per key
    r = _run(app, "POST", "/v1/x", headers={"x-api-key": "a"})
    assert int(r.headers["retry-after"]) >= 1


def test_bucket_refills():
    rl = RateLimiter(60)  # one a second
    for _ in range(60):
        assert rl.allow("x") == 0.0
    wait = rl.allow("x")
    assert 0 < wait <= 1.0
