"""The serving benchmark's measuring code (bench/serve.py): percentiles, SSE parsing, token counting.

The streaming client runs against a tiny local HTTP server that speaks the chat-completions
SSE format, so the parsing, timing and counting are exercised over a real socket; the
end-to-end benchmark against llama-server and groundup serve is `python -m bench.serve`.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench.serve_clients import (PROMPTS, RequestResult, chunk_content, percentile, request_body, run_level,
                                 sse_data, stream_request, summarize)

httpx = pytest.importorskip("httpx", reason="httpx not installed (pip install httpx)")


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(0)
    for n in (1, 2, 3, 7, 50):
        values = [rng.uniform(0, 5) for _ in range(n)]
        for q in (0, 25, 50, 90, 95, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))


def test_sse_data_and_chunk_content() -> None:
    assert sse_data('data: {"a": 1}') == '{"a": 1}'
    assert sse_data("data:[DONE]") == "[DONE]"
    assert sse_data(": keep-alive") is None
    assert sse_data("") is None
    assert sse_data("event: message") is None
    chunk = {"choices": [{"delta": {"content": "Hel"}}, {"delta": {"content": "lo"}}]}
    assert chunk_content(chunk) == "Hello"
    assert chunk_content({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert chunk_content({"choices": [], "usage": {"completion_tokens": 3}}) == ""


def test_summarize_excludes_errors_from_tokens_and_ttft() -> None:
    results = [RequestResult(0.1, 10, 1.0), RequestResult(0.3, 20, 2.0), RequestResult(None, 0, 0.5, "HTTP 500")]
    s = summarize(results, wall=3.0, clients=2)
    assert s["tokens"] == 30 and s["errors"] == 1 and s["requests"] == 3
    assert s["tok_s"] == pytest.approx(10.0)
    assert s["ttft_p50"] == pytest.approx(0.2)
    assert s["tokens_per_request"] == pytest.approx(15.0)
    assert s["first_error"] == "HTTP 500"


class FakeChat(BaseHTTPRequestHandler):
    """Streams `n` content deltas after a role-only delta; usage (n + 2 tokens) only when asked for."""

    delay = 0.2
    seen: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.seen.append(body)
        if body["max_tokens"] < 0:
            self.send_response(500)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"boom")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        n = body["max_tokens"]

        def send(obj) -> None:
            self.wfile.write(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")
            self.wfile.flush()

        send({"choices": [{"delta": {"role": "assistant"}}]})
        time.sleep(self.delay)
        for i in range(n):
            send({"choices": [{"delta": {"content": f"t{i}"}}]})
        if body.get("stream_options", {}).get("include_usage"):
            send({"choices": [], "usage": {"completion_tokens": n + 2}})
        send(b"[DONE]")


@pytest.fixture(scope="module")
def fake_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def _one(url: str, body: dict) -> RequestResult:
    async with httpx.AsyncClient(timeout=10) as client:
        return await stream_request(client, url + "/v1/chat/completions", body)


def test_stream_request_times_first_content_and_prefers_usage(fake_url: str) -> None:
    r = asyncio.run(_one(fake_url, request_body("hi", 5, "m")))
    assert r.error is None
    assert r.tokens == 7  # from usage, not the 5 deltas
    assert FakeChat.delay <= r.ttft <= r.total  # the role-only delta does not count as the first token
    body = request_body("hi", 4, "m")
    del body["stream_options"]
    r = asyncio.run(_one(fake_url, body))
    assert r.tokens == 4  # no usage chunk: counted deltas


def test_stream_request_reports_http_errors(fake_url: str) -> None:
    r = asyncio.run(_one(fake_url, request_body("hi", -1, "m")))
    assert r.error is not None and "500" in r.error and r.tokens == 0


def test_run_level_runs_every_request_concurrently(fake_url: str) -> None:
    FakeChat.seen.clear()
    results, wall = asyncio.run(run_level(fake_url, clients=3, per_client=2, max_tokens=3, model="m"))
    assert len(results) == 6 and all(r.error is None and r.tokens == 5 for r in results)
    sent = [b["messages"][0]["content"] for b in FakeChat.seen]
    assert len(set(sent)) == 6  # every request's message is unique ...
    assert {m.split("] ", 1)[1] for m in sent} == set(PROMPTS[:6])  # ... a tag before the fixed prompts
    assert all(b["ignore_eos"] and b["temperature"] == 0 for b in FakeChat.seen)
    # 3 clients x 2 sequential requests of >= delay each: concurrent, so well under 6 x delay
    assert 2 * FakeChat.delay <= wall < 6 * FakeChat.delay
