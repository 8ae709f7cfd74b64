"""The LLM protocol: one interface over a local model, `groundup serve`, or any OpenAI-compatible API.

Agent, eval, red-team and arena code take an `LLM` and call `chat`, `stream`
and `loglikelihood`; they never care where the model runs.
- `LocalLLM(engine)` runs in-process through the same code path as the server
  (chat template, tools and JSON-Schema constraints, batching scheduler).
- `OpenAICompatibleLLM(base_url, api_key, model)` speaks HTTP to
  `/chat/completions` and `/completions` (log-likelihoods via `echo` +
  `logprobs`, split at the context's character offset, so no local tokenizer
  is needed).
Both take OpenAI request fields as keyword arguments (temperature, max_tokens,
seed, stop, response_format, tool_choice, top_k ...).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from groundup.errors import GroundupError


@dataclass
class ChatResult:
    content: str | None
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI shape: {id, type, function: {name, arguments}}
    finish_reason: str | None = None
    usage: dict = field(default_factory=dict)


class LLM(Protocol):
    name: str

    def chat(self, messages: list[dict], tools: list[dict] | None = None, **params) -> ChatResult: ...

    def stream(self, messages: list[dict], tools: list[dict] | None = None, **params) -> Iterator[str]: ...

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]: ...


def _result(body: dict) -> ChatResult:
    ch = body["choices"][0]
    msg = ch.get("message") or {}
    return ChatResult(msg.get("content"), msg.get("tool_calls") or [], ch.get("finish_reason"), body.get("usage") or {})


class LocalLLM:
    """An in-process model behind the LLM protocol (the server's request handling, without HTTP)."""

    def __init__(self, engine, name: str = "local", limits=None) -> None:
        from groundup.engine.scheduler import Scheduler
        from groundup.server.generation import Limits, ServedModel
        from groundup.server.metrics import Metrics

        self.name = name
        self.served = ServedModel(name, Scheduler(engine))
        self.limits = limits or Limits(max_prompt_tokens=engine.max_len - 1)
        self._metrics = Metrics()

    @classmethod
    def load(cls, name_or_path: str, dtype: str = "auto", max_batch: int = 8, max_len: int = 2048) -> "LocalLLM":
        from groundup.engine.engine import Engine
        from groundup.models import load_model

        model, tok = load_model(name_or_path, dtype=dtype)
        return cls(Engine(model, tok, max_batch=max_batch, max_len=max_len, prefix_slots=2), name=str(name_or_path))

    def _job(self, messages, tools, params):
        from groundup.server.chat_api import ChatJob
        from groundup.server.generation import APIError
        from groundup.server.protocol import ChatCompletionRequest

        try:
            req = ChatCompletionRequest(model=self.name, messages=messages, tools=tools, **params)
            return ChatJob(req, self.served, self.limits)
        except APIError as e:
            raise GroundupError(e.message) from None
        except ValueError as e:  # pydantic validation: name the field, like the server's 400
            errs = getattr(e, "errors", lambda: [])()
            where = ".".join(str(x) for x in errs[0]["loc"]) if errs else ""
            raise GroundupError(f"bad chat request: {where}: {errs[0]['msg'] if errs else e}") from None

    def chat(self, messages: list[dict], tools: list[dict] | None = None, **params) -> ChatResult:
        from groundup.server import chat_api
        from groundup.server.generation import APIError

        job = self._job(messages, tools, params)
        try:
            return _result(asyncio.run(chat_api.complete(job, self._metrics)))
        except APIError as e:
            raise GroundupError(e.message) from None

    def stream(self, messages: list[dict], tools: list[dict] | None = None, **params) -> Iterator[str]:
        from groundup.server import chat_api

        job = self._job(messages, tools, dict(params, n=1))
        loop = asyncio.new_event_loop()
        agen = chat_api._merged(job)
        try:
            while True:
                try:
                    _, kind, payload = loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
                if kind == "content" and payload[0]:
                    yield payload[0]
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        """(sum of log P(continuation tokens | context), whether each was the greedy choice)."""
        tok = self.served.tokenizer
        ctx = tok.encode(context)
        cont = tok.encode(continuation, add_bos=False)
        if not cont:
            raise GroundupError("continuation is empty: nothing to score")
        ids = ctx + cont
        scored = self.served.scheduler.call(lambda e: e.score(ids, top=1)).result()
        total, greedy = 0.0, True
        for t, (lp, alts) in zip(ids[len(ctx):], scored[len(ctx):]):
            total += lp
            greedy = greedy and bool(alts) and alts[0][0] == t
        return total, greedy

    def close(self) -> None:
        self.served.scheduler.close()


class OpenAICompatibleLLM:
    """Any OpenAI-compatible endpoint: `groundup serve`, llama-server, vLLM, a hosted provider."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "", timeout: float = 600.0) -> None:
        import httpx

        self.name = model
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        try:
            r = self._http.post(path, json=body)
        except httpx.HTTPError as e:
            raise GroundupError(f"cannot reach {self.base_url}{path}: {e}") from None
        if r.status_code != 200:
            raise GroundupError(f"{self.base_url}{path} answered {r.status_code}: {_message(r)}")
        return r.json()

    def chat(self, messages: list[dict], tools: list[dict] | None = None, **params) -> ChatResult:
        body = {"model": self.name, "messages": messages, **params}
        if tools:
            body["tools"] = tools
        return _result(self._post("/chat/completions", body))

    def stream(self, messages: list[dict], tools: list[dict] | None = None, **params) -> Iterator[str]:
        import httpx

        body = {"model": self.name, "messages": messages, "stream": True, **params}
        if tools:
            body["tools"] = tools
        try:
            with self._http.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    raise GroundupError(f"{self.base_url}/chat/completions answered {r.status_code}: {_message(r)}")
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise GroundupError(f"stream failed: {chunk['error'].get('message')}")
                    for ch in chunk.get("choices") or []:
                        text = (ch.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as e:
            raise GroundupError(f"cannot reach {self.base_url}: {e}") from None

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        body = {"model": self.name, "prompt": context + continuation, "max_tokens": 1, "temperature": 0,
                "echo": True, "logprobs": 1}
        lp = self._post("/completions", body)["choices"][0].get("logprobs")
        if not lp or not lp.get("text_offset"):
            raise GroundupError(f"{self.base_url} does not return echo logprobs; it cannot score text")
        total, greedy, n = 0.0, True, len(lp["tokens"]) - 1  # the last token is the generated one
        for i in range(n):
            if lp["text_offset"][i] < len(context) or lp["token_logprobs"][i] is None:
                continue
            total += lp["token_logprobs"][i]
            top = lp["top_logprobs"][i] or {}
            greedy = greedy and bool(top) and max(top.values()) <= lp["token_logprobs"][i] + 1e-6
        return total, greedy


def _message(r) -> str:
    try:
        return r.json()["error"]["message"]
    except Exception:
        return r.text[:200]
