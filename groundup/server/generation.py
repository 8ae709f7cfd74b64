"""From an API request to engine work and back: sampling params, limits, and the async bridge.

`ServedModel` bundles what one model name serves (engine, scheduler, tokenizer).
`sampling_params` turns OpenAI fields into `SamplingParams` and enforces the
server's limits with 400-class errors that name the limit. `stream_events`
submits one request to the scheduler and yields its TokenEvents inside the
event loop; if the consumer goes away (client disconnected, timeout), the
request is cancelled so the batch does not keep generating for nobody.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from groundup.engine.engine import Request, TokenEvent
from groundup.engine.params import SamplingParams
from groundup.engine.scheduler import Scheduler
from groundup.errors import GroundupError


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    max_prompt_tokens: int = 4096
    max_output_tokens: int = 2048
    max_body_bytes: int = 2 * 1024 * 1024
    request_timeout_s: float = 600.0
    rate_limit_per_min: int = 0  # per API key (or client address without keys); 0 = off
    max_queue: int = 64


@dataclass
class ServedModel:
    name: str
    scheduler: Scheduler
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def engine(self):
        return self.scheduler.engine

    @property
    def tokenizer(self):
        return self.scheduler.engine.tokenizer

    @property
    def context_length(self) -> int:
        return self.scheduler.engine.max_len


def sampling_params(req, prompt_len: int, model: ServedModel, limits: Limits,
                    max_tokens: int | None, logprobs: int | None, seed_offset: int = 0) -> SamplingParams:
    """SamplingParams for one choice of `req` (ChatCompletionRequest or CompletionRequest)."""
    if prompt_len > limits.max_prompt_tokens:
        raise APIError(400, f"prompt is {prompt_len} tokens; this server accepts at most "
                            f"{limits.max_prompt_tokens} (max prompt tokens)", param="messages",
                       code="context_length_exceeded")
    room = model.context_length - prompt_len - 1
    if room < 1:
        raise APIError(400, f"prompt is {prompt_len} tokens; the model's context on this server holds "
                            f"{model.context_length}", param="messages", code="context_length_exceeded")
    if max_tokens is not None and max_tokens > limits.max_output_tokens:
        raise APIError(400, f"max_tokens {max_tokens} is over this server's limit of "
                            f"{limits.max_output_tokens} output tokens", param="max_tokens")
    bias = None
    if req.logit_bias:
        bias = {}
        for k, v in req.logit_bias.items():
            if not k.lstrip("-").isdigit() or not 0 <= int(k) < model.engine.cfg.vocab_size:
                raise APIError(400, f"logit_bias key {k!r} is not a token id of this model", param="logit_bias")
            bias[int(k)] = v
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 16 or any(not s for s in stop):
        raise APIError(400, "stop must be at most 16 non-empty strings", param="stop")
    p = SamplingParams(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        repetition_penalty=req.repetition_penalty or 1.0,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logit_bias=bias,
        seed=None if req.seed is None else (req.seed + seed_offset) % (1 << 63),
        max_tokens=min(max_tokens or limits.max_output_tokens, room, limits.max_output_tokens),
        stop=stop,
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
    )
    try:
        p.validate()
    except GroundupError as e:
        raise APIError(400, str(e)) from None
    return p


async def stream_events(model: ServedModel, request: Request, timeout_s: float) -> AsyncIterator[TokenEvent]:
    """Run one request on the model's scheduler; yield its events; cancel it if abandoned."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def sink(item) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    key = model.scheduler.submit(request, sink)
    deadline = loop.time() + timeout_s
    finished = False
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise APIError(504, f"request took longer than the server's {timeout_s:g} s timeout",
                               type_="timeout_error")
            try:
                item = await asyncio.wait_for(queue.get(), left)
            except asyncio.TimeoutError:
                continue
            if isinstance(item, GroundupError):
                finished = True
                raise APIError(400, str(item))
            if isinstance(item, BaseException):
                finished = True
                raise APIError(500, f"generation failed: {type(item).__name__}: {item}", type_="server_error")
            yield item
            if item.finished:
                finished = True
                return
    finally:
        if not finished:
            model.scheduler.cancel(key)


def token_text(tokenizer, token: int) -> str:
    return tokenizer.token_bytes(token).decode("utf-8", errors="replace")
