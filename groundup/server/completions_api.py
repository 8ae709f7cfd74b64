"""POST /v1/completions: the legacy text-completion API, with `echo` + `logprobs`.

`echo: true` with `logprobs: k` returns the log-probability of every prompt
token given the ones before it (the first gets null) plus the k most likely
alternatives — what lm-evaluation-harness's `local-completions` backend reads
to score multiple-choice answers (`max_tokens` may be 0 to score only).
Prompts may be text, a list of texts, token ids, or a list of token-id lists;
each prompt gets `n` choices, indexed prompt-major.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import AsyncIterator

from groundup.engine.engine import Request
from groundup.server.generation import APIError, Limits, ServedModel, sampling_params, stream_events, token_text
from groundup.server.protocol import CompletionRequest


def prompt_ids(req: CompletionRequest, model: ServedModel) -> list[list[int]]:
    p, tok, vocab = req.prompt, model.tokenizer, model.engine.cfg.vocab_size
    if isinstance(p, str):
        prompts = [p]
    elif p and all(isinstance(x, int) for x in p):
        prompts = [p]
    else:
        prompts = list(p)
    if not prompts or len(prompts) > 64:
        raise APIError(400, "prompt must be 1 to 64 texts or token lists", param="prompt")
    out = []
    for x in prompts:
        ids = tok.encode(x) if isinstance(x, str) else list(x)
        if not ids:
            raise APIError(400, "prompt is empty: give at least one token", param="prompt")
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"prompt has token ids outside the vocabulary (size {vocab})", param="prompt")
        out.append(ids)
    return out


class CompletionJob:
    def __init__(self, req: CompletionRequest, model: ServedModel, limits: Limits) -> None:
        if req.suffix:
            raise APIError(400, "suffix (fill-in-the-middle) is not supported by this server", param="suffix")
        self.req, self.model, self.limits = req, model, limits
        self.prompts = prompt_ids(req, model)
        self.k = req.logprobs
        self.max_tokens = 16 if req.max_tokens is None else req.max_tokens
        if self.max_tokens == 0 and not req.echo:
            raise APIError(400, "max_tokens 0 is only meaningful with echo", param="max_tokens")
        self.params = [[sampling_params(req, len(ids), model, limits, max(self.max_tokens, 1), self.k, j)
                        for j in range(req.n)] for ids in self.prompts]

    async def choice(self, p: int, j: int) -> dict:
        ids, tok = self.prompts[p], self.model.tokenizer
        text, tokens, lps, tops = "", [], [], []
        if self.req.echo:
            text = tok.decode(ids)
            if self.k is not None:
                k = self.k
                scored = await asyncio.wrap_future(self.model.scheduler.call(lambda e: e.score(ids, top=max(k, 1))))
                for n, (t, (lp, alts)) in enumerate(zip(ids, scored)):
                    tokens.append(t)
                    lps.append(None if n == 0 else lp)
                    tops.append(None if n == 0 else {token_text(tok, a): v for a, v in alts[:max(k, 1)]})
        finish, generated = "length", 0
        if self.max_tokens > 0:
            async for ev in stream_events(self.model, Request(ids, self.params[p][j]), self.limits.request_timeout_s):
                text += ev.text
                generated += 1
                if self.k is not None:
                    tokens.append(ev.token)
                    lps.append(ev.logprob)
                    tops.append({token_text(tok, a): v for a, v in (ev.top_logprobs or [])})
                finish = ev.finish_reason or finish
        logprobs = None
        if self.k is not None:
            strs = [token_text(tok, t) for t in tokens]
            offsets, at = [], 0
            for s in strs:
                offsets.append(at)
                at += len(s)
            logprobs = {"tokens": strs, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
        return {"index": p * self.req.n + j, "text": text, "logprobs": logprobs, "finish_reason": finish,
                "_generated": generated}


async def complete(job: CompletionJob, metrics) -> dict:
    coros = [job.choice(p, j) for p in range(len(job.prompts)) for j in range(job.req.n)]
    choices = await asyncio.gather(*coros)
    generated = sum(c.pop("_generated") for c in choices)
    prompt = sum(len(ids) for ids in job.prompts) * job.req.n
    metrics.observe(prompt, generated)
    return {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
            "model": job.model.name, "system_fingerprint": "groundup", "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}}


async def stream(job: CompletionJob, metrics) -> AsyncIterator[str]:
    """Streaming completions: one chunk per token (echo text first when asked)."""
    cid, created = "cmpl-" + secrets.token_hex(12), int(time.time())
    if len(job.prompts) * job.req.n != 1 or (job.req.echo and job.k is not None):
        raise APIError(400, "streaming completions support one prompt, n=1, and no echo with logprobs")

    def chunk(text: str, finish: str | None, lp: dict | None = None) -> str:
        return "data: " + json.dumps({"id": cid, "object": "text_completion", "created": created,
                                      "model": job.model.name, "choices": [{"index": 0, "text": text,
                                      "logprobs": lp, "finish_reason": finish}]}, ensure_ascii=False) + "\n\n"

    ids, tok = job.prompts[0], job.model.tokenizer
    if job.req.echo:
        yield chunk(tok.decode(ids), None)
    generated = 0
    try:
        async for ev in stream_events(job.model, Request(ids, job.params[0][0]), job.limits.request_timeout_s):
            generated += 1
            lp = None
            if job.k is not None:
                lp = {"tokens": [token_text(tok, ev.token)], "token_logprobs": [ev.logprob],
                      "top_logprobs": [{token_text(tok, a): v for a, v in (ev.top_logprobs or [])}]}
            yield chunk(ev.text, ev.finish_reason, lp)
    except APIError as e:
        yield "data: " + json.dumps(e.body()) + "\n\n"
        return
    metrics.observe(len(ids), generated)
    yield "data: [DONE]\n\n"
