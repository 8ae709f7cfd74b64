"""`groundup serve` with SmolLM2, driven by the official `openai` SDK (sync and async) and raw HTTP."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.serving import live_server, rss_mb

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

KEY = "test-key-123"
MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a timezone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(smollm2_path):
    # fp32: batched rows are bit-identical to single ones there (the int4/int8 kernels round
    # activations to bf16 and may differ with the batch size); the default int4 path is
    # exercised by test_llm.py and test_webchat.py.
    with live_server("--model", MODEL, "--dtype", "fp32", "--api-key", KEY, "--max-len", "1024", "--max-prompt-tokens", "400",
                     "--max-output-tokens", "256", "--max-queue", "32",
                     "--max-batch", "16") as (base, proc):
        yield base, proc


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _metric(base: str, name: str) -> float:
    text = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} missing")


def test_models_and_health(server, client):
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"  # open without a key
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_greedy_and_stream_agree(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24)
    text = r.choices[0].message.content
    assert "Paris" in text
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 10
    assert r.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason


def test_async_concurrent_streams_match_sequential(server, client):
    prompts = ["Name a fruit.", "Count to five.", "What is 2+2?", "Say hello in French."]
    singles = [client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}],
                                              temperature=0, max_tokens=16).choices[0].message.content
               for p in prompts]

    async def run():
        aclient = openai.AsyncOpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)

        async def one(p):
            stream = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}],
                                                           temperature=0, max_tokens=16, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        return await asyncio.gather(*(one(p) for p in prompts))

    assert asyncio.run(run()) == singles  # batched together, same tokens as one at a time


def test_n_choices_seeded(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Write a word."}], temperature=1.0,
              max_tokens=12, n=3, seed=7)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1  # different seeds per choice


def test_stop_string(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=24, stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=6,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-4)  # greedy = most likely
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tool_call_required_validates(client, seed):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What's the weather in Oslo?"}], tools=[WEATHER, TIME],
        tool_choice="required", temperature=0.8, seed=seed, max_tokens=80)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    call = ch.message.tool_calls[0]
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_tool_call_named_streamed_then_answer(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=80,
        stream=True)
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    # the conversation continues with the tool's result
    msgs = [{"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": calls[0].id, "type": "function",
             "function": {"name": "get_weather", "arguments": calls[0].function.arguments}}]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temperature": 21, "sky": "sunny"}'}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], temperature=0, max_tokens=40,
                                       tool_choice="none")
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")


def test_tool_choice_auto_is_valid_either_way(client):
    for q in ["What's the weather in Paris in celsius?", "Tell me a joke."]:
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}],
                                           tools=[WEATHER], temperature=0, max_tokens=60)
        ch = r.choices[0]
        if ch.finish_reason == "tool_calls":
            jsonschema.validate(json.loads(ch.message.tool_calls[0].function.arguments),
                                WEATHER["function"]["parameters"])
        else:
            assert ch.message.content is not None and "<tool_call>" not in ch.message.content


def test_response_format_json_schema_and_object(client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
              "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
              "required": ["name", "age", "tags"]}
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}], temperature=0.9,
            seed=seed, max_tokens=120,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give a JSON object with one key, color."}],
        temperature=0, max_tokens=200, response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":  # any object may run past max_tokens; then OpenAI says "length" too
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")


def test_completions_echo_logprobs_match_generation(server, client):
    gen = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=1, temperature=0,
                                    logprobs=1)
    tok, lp = gen.choices[0].logprobs.tokens[0], gen.choices[0].logprobs.token_logprobs[0]
    echo = client.completions.create(model=MODEL, prompt="The capital of France is" + tok, max_tokens=0,
                                     echo=True, logprobs=1, temperature=0)
    ch = echo.choices[0]
    assert ch.text == "The capital of France is" + tok
    assert ch.logprobs.token_logprobs[0] is None and ch.logprobs.tokens[-1] == tok
    assert ch.logprobs.token_logprobs[-1] == pytest.approx(lp, abs=2e-3)
    # lm-evaluation-harness's is_greedy check: the continuation is the argmax
    assert max(ch.logprobs.top_logprobs[-1].values()) == pytest.approx(ch.logprobs.token_logprobs[-1], abs=1e-5)
    # token-id prompts, several per request (what lm-eval's local-completions sends)
    ids = httpx.post(server[0] + "/tokenize", json={"prompt": "The capital of France is" + tok},
                     headers={"Authorization": f"Bearer {KEY}"}).json()["tokens"]
    batch = client.completions.create(model=MODEL, prompt=[ids, ids[:3]], max_tokens=1, echo=True, logprobs=1,
                                      temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].logprobs.token_logprobs[len(ids) - 1] == pytest.approx(lp, abs=2e-3)


def test_bad_input(server):
    base, h = server[0], {"Authorization": f"Bearer {KEY}"}
    chat = base + "/v1/chat/completions"
    r = httpx.post(chat, content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = httpx.post(chat, json={"model": "no-such-model", "messages": FRANCE}, headers=h)
    assert r.status_code == 404 and "no-such-model" in r.json()["error"]["message"]
    r = httpx.post(chat, json={"model": MODEL, "messages": [{"role": "user", "content": "word " * 600}]}, headers=h)
    assert r.status_code == 400 and "400" in r.json()["error"]["message"]  # names the limit
    r = httpx.post(chat, json={"model": MODEL, "messages": FRANCE}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.post(chat, json={"model": MODEL, "messages": FRANCE}).status_code == 401
    r = httpx.post(chat, json={"model": MODEL, "messages": FRANCE, "temperature": 9}, headers=h)
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = httpx.post(chat, json={"model": MODEL, "messages": FRANCE, "max_tokens": 10_000}, headers=h)
    assert r.status_code == 400 and "256" in r.json()["error"]["message"]
    r = httpx.post(chat, content=b"x" * (3 * 1024 * 1024), headers={**h, "content-type": "application/json"})
    assert r.status_code == 413


def test_disconnect_cancels_generation(server):
    base, h = server[0], {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "messages": FRANCE, "max_tokens": 256, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, headers=h, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert _metric(base, "groundup_running") == 1
    deadline = time.monotonic() + 5  # 250 more tokens would take far longer than this
    while _metric(base, "groundup_running") != 0:
        assert time.monotonic() < deadline, "generation kept running after the client left"
        time.sleep(0.1)


def test_prefix_cache_skips_shared_prompt(client, server):
    before = _metric(server[0], "groundup_prefix_cached_tokens_total")
    msgs = [{"role": "user", "content": "Tell me one fact about the moon. " * 5}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=20)
    msgs += [{"role": "assistant", "content": r.choices[0].message.content},
             {"role": "user", "content": "And one about the sun?"}]
    r2 = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=5)
    reused = _metric(server[0], "groundup_prefix_cached_tokens_total") - before
    assert reused >= r.usage.prompt_tokens  # the whole first turn was not recomputed
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens


def test_thousand_connections_bounded(server, client):
    base, proc = server
    rss0 = rss_mb(proc.pid)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}

    bodies: list[str] = []

    async def flood():
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=120,
                                     headers={"Authorization": f"Bearer {KEY}"}) as c:
            async def one():
                try:
                    r = await c.post(base + "/v1/chat/completions", json=body)
                    if r.status_code >= 500 and not bodies:
                        bodies.append(r.text[:300])
                    return r.status_code
                except httpx.HTTPError as e:  # a refused/reset connection counts as refused work
                    return type(e).__name__
            return await asyncio.gather(*(one() for _ in range(1000)))

    codes = asyncio.run(flood())
    assert proc.poll() is None  # still up
    ok = codes.count(200)
    refused = sum(1 for c in codes if c in (429, 503) or isinstance(c, str))
    assert ok >= 16 and ok + refused == 1000 and refused > 0, ({c: codes.count(c) for c in set(codes)}, bodies, httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text[-900:])
    assert rss_mb(proc.pid) - rss0 < 400  # memory stays bounded
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=8)
    assert r.choices[0].message.content  # normal service afterwards
