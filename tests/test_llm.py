"""The LLM protocol: LocalLLM (in-process) and OpenAICompatibleLLM (over `groundup serve`) agree."""
from __future__ import annotations

import pytest

from groundup.errors import GroundupError
from groundup.llm import LocalLLM, OpenAICompatibleLLM
from tests.serving import live_server

MSGS = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def pair(smollm2_path):
    # the same weights on both sides (the server's CPU default is int4)
    local = LocalLLM.load(str(smollm2_path), dtype="fp32", max_batch=4, max_len=1024)
    with live_server("--model", "smollm2-135m-instruct", "--dtype", "fp32", "--max-len", "1024",
                     "--max-batch", "4") as (base, _):
        yield local, OpenAICompatibleLLM(base + "/v1", model="smollm2-135m-instruct")
    local.close()


def test_chat_stream_agree(pair):
    local, remote = pair
    a = local.chat(MSGS, temperature=0, max_tokens=20)
    b = remote.chat(MSGS, temperature=0, max_tokens=20)
    assert a.content == b.content and "Paris" in a.content
    assert a.usage["prompt_tokens"] == b.usage["prompt_tokens"]
    assert "".join(local.stream(MSGS, temperature=0, max_tokens=20)) == a.content
    assert "".join(remote.stream(MSGS, temperature=0, max_tokens=20)) == a.content


def test_tool_calls_both_ways(pair):
    for llm in pair:
        r = llm.chat([{"role": "user", "content": "Weather in Lima?"}], tools=[WEATHER], tool_choice="required",
                     temperature=0, max_tokens=40)
        assert r.finish_reason == "tool_calls" and r.tool_calls[0]["function"]["name"] == "get_weather"


def test_loglikelihood_agree_and_rank(pair):
    local, remote = pair
    ctx = "The capital of France is"
    good_l, greedy_l = local.loglikelihood(ctx, " Paris")
    good_r, greedy_r = remote.loglikelihood(ctx, " Paris")
    bad_l, _ = local.loglikelihood(ctx, " a banana")
    assert good_l == pytest.approx(good_r, abs=5e-3) and greedy_l == greedy_r
    assert good_l > bad_l  # the model prefers the right answer
    assert good_l < 0


def test_errors_are_one_line(pair):
    local, remote = pair
    with pytest.raises(GroundupError, match="temperature"):
        local.chat(MSGS, temperature=5)
    with pytest.raises(GroundupError, match="400"):
        remote.chat(MSGS, temperature=5)
    with pytest.raises(GroundupError, match="cannot reach"):
        OpenAICompatibleLLM("http://127.0.0.1:9/v1", model="x").chat(MSGS)
