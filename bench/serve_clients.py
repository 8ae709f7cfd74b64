"""The benchmark's client side: fixed prompts, one streaming chat request, a concurrency level,
and the statistics (percentiles, aggregate tokens/s). Used by bench/serve.py for both servers."""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List five tips for staying focused while studying, with one sentence each.",
    "What are the main differences between a virus and a bacterium?",
    "Describe the water cycle step by step.",
    "Give me a recipe for a simple vegetable soup.",
    "Why is the sky blue? Answer in a friendly tone.",
    "Write a polite email asking a colleague to review my report by Friday.",
    "Summarize the plot of a detective novel you would like to read.",
    "How do I reverse a list in Python? Show two ways.",
    "What should I pack for a three-day hiking trip in the mountains?",
    "Compose a short poem about autumn leaves and city streets.",
    "Explain what a prime number is and give some examples.",
    "Describe a typical day in the life of a honeybee.",
    "What are some good habits for saving money each month?",
    "Tell me about the history of the bicycle in a few paragraphs.",
]


@dataclass
class RequestResult:
    """One streamed request: seconds to the first content, tokens generated, seconds in all."""

    ttft: float | None
    tokens: int
    total: float
    error: str | None = None


# ---- statistics and stream parsing -------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def sse_data(line: str) -> str | None:
    """The payload of a server-sent-events `data:` line; None for other lines (comments, blanks, event:)."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def chunk_content(chunk: dict) -> str:
    """The text a chat-completion stream chunk adds (all choices' delta.content)."""
    return "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])


def summarize(results: list[RequestResult], wall: float, clients: int) -> dict:
    """Aggregate one concurrency level: tokens/s over its wall time and TTFT percentiles."""
    ok = [r for r in results if r.error is None]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    tokens = sum(r.tokens for r in ok)
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok), "tokens": tokens,
            "tokens_per_request": tokens / len(ok) if ok else 0.0, "wall_s": wall,
            "tok_s": tokens / wall if wall > 0 else 0.0,
            "ttft_p50": percentile(ttfts, 50), "ttft_p95": percentile(ttfts, 95),
            "first_error": next((r.error for r in results if r.error), None)}


# ---- clients -----------------------------------------------------------------------------------

def request_body(prompt: str, max_tokens: int, model: str) -> dict:
    """One streaming, greedy chat request that generates exactly `max_tokens` (EOS ignored)."""
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "temperature": 0.0,
            "seed": 0, "ignore_eos": True}


async def stream_request(client, url: str, body: dict) -> RequestResult:
    """POST one streaming chat completion and time it."""
    import httpx

    t0 = time.perf_counter()
    ttft: float | None = None
    deltas = 0
    usage: int | None = None
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                return RequestResult(None, 0, time.perf_counter() - t0, f"HTTP {r.status_code}: {text[:200]}")
            async for line in r.aiter_lines():
                data = sse_data(line)
                if not data:
                    continue
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return RequestResult(ttft, 0, time.perf_counter() - t0, f"stream error: {chunk['error']}")
                if chunk_content(chunk):
                    deltas += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                if isinstance(chunk.get("usage"), dict) and "completion_tokens" in chunk["usage"]:
                    usage = int(chunk["usage"]["completion_tokens"])
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return RequestResult(ttft, 0, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    return RequestResult(ttft, usage if usage is not None else deltas, time.perf_counter() - t0)


def prompt_for(tag: str, client: int, i: int, per_client: int) -> str:
    """The user message of request `i` of `client`: a fixed prompt behind a tag that makes it unique."""
    return f"[{tag}{client}.{i}] " + PROMPTS[(client * per_client + i) % len(PROMPTS)]


async def run_level(base_url: str, clients: int, per_client: int, max_tokens: int,
                    model: str, tag: str = "") -> tuple[list[RequestResult], float]:
    """`clients` concurrent clients, each sending `per_client` requests in turn; returns results and wall time."""
    import httpx

    url = base_url + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        async def worker(c: int) -> list[RequestResult]:
            out = []
            for i in range(per_client):
                body = request_body(prompt_for(tag, c, i, per_client), max_tokens, model)
                out.append(await stream_request(client, url, body))
            return out

        t0 = time.perf_counter()
        per_worker = await asyncio.gather(*(worker(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    return [r for rs in per_worker for r in rs], wall
