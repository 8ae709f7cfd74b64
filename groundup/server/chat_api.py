"""POST /v1/chat/completions: messages in, assistant message (or tool calls) out, streamed or whole.

Each of the `n` choices runs as its own engine request (they share the prompt
through the prefix cache). Structured output uses constrained decoding:
`response_format` json_object / json_schema constrain the whole answer;
`tool_choice` "required" or a named function make the answer one tool call
whose JSON is constrained to the tools' schemas; "auto" lets the model write
text and, if it starts a `<tool_call>`, continues under the constraint.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import AsyncIterator

from groundup.engine.engine import Request
from groundup.errors import GroundupError
from groundup.server import tool_calls as tc
from groundup.server.generation import APIError, Limits, ServedModel, sampling_params, stream_events, token_text
from groundup.server.protocol import ChatCompletionRequest


def compile_constraint(schema: dict | None, tokenizer):
    """A fresh per-sequence constraint for `schema` (None = any JSON object)."""
    from groundup.engine.constrain import compile_json_schema

    try:
        return compile_json_schema(schema, tokenizer).start()
    except GroundupError as e:
        raise APIError(400, f"cannot constrain output to this schema: {e}", param="response_format") from None


class ChatJob:
    """One chat request, prepared: prompt ids, mode, and what each choice needs."""

    def __init__(self, req: ChatCompletionRequest, model: ServedModel, limits: Limits) -> None:
        self.req, self.model, self.limits = req, model, limits
        tok = model.tokenizer
        tools = [t.model_dump() for t in req.tools] if req.tools else None
        choice = req.tool_choice if req.tool_choice is not None else ("auto" if tools else "none")
        if choice != "none" and not tools:
            raise APIError(400, "tool_choice is set but no tools were given", param="tool_choice")
        self.tools = tools if choice != "none" else None
        self.forced: str | None = None  # "" = any tool, name = that tool
        if self.tools and choice == "required":
            self.forced = ""
        elif self.tools and not isinstance(choice, str):
            self.forced = choice.function.name
            tc.call_schema(self.tools, self.forced)  # unknown name -> 400 now
        msgs = [m.model_dump(exclude_none=True) for m in req.messages]
        try:
            self.ids = tok.encode_chat(tc.prepare_messages(msgs, self.tools))
        except GroundupError as e:
            raise APIError(400, str(e), param="messages") from None
        if self.forced is not None:
            self.ids = self.ids + tok.encode(tc.OPEN, add_bos=False)
        self.schema = None
        rf = req.response_format
        if self.forced is not None:
            self.schema = tc.call_schema(self.tools, self.forced or None)
        elif rf is not None and rf.type == "json_object":
            self.schema = "any-object"
        elif rf is not None and rf.type == "json_schema":
            if rf.json_schema is None or rf.json_schema.schema_ is None:
                raise APIError(400, "response_format json_schema needs json_schema.schema", param="response_format")
            self.schema = rf.json_schema.schema_
        self.logprobs = (req.top_logprobs or 0) if req.logprobs else None
        self.max_tokens = req.max_completion_tokens or req.max_tokens
        self.params = [sampling_params(req, len(self.ids), model, limits, self.max_tokens, self.logprobs, i)
                       for i in range(req.n)]
        if self.schema is not None:
            compile_constraint(None if self.schema == "any-object" else self.schema, tok)  # bad schema -> 400 now

    def constraint(self, schema=None):
        s = schema if schema is not None else self.schema
        return compile_constraint(None if s == "any-object" else s, self.model.tokenizer)

    async def run_choice(self, i: int, emit) -> None:
        """Generate choice i; emit(i, kind, payload) for "content", "tool_call", "finish"."""
        tok, params = self.model.tokenizer, self.params[i]
        timeout = self.limits.request_timeout_s
        auto_tools = self.tools is not None and self.forced is None
        if auto_tools:
            params.stop = params.stop + [tc.OPEN]
        constraint = self.constraint() if self.schema is not None else None
        generated: list[int] = []
        text_parts: list[str] = []
        finish = None
        async for ev in stream_events(self.model, Request(self.ids, params, constraint=constraint), timeout):
            generated.append(ev.token)
            text_parts.append(ev.text)
            if self.forced is None:
                await emit(i, "content", (ev.text, self._lp(ev)))
            finish = ev.finish_reason
        completion = len(generated)
        if self.forced is not None:
            await emit(i, "tool_call", tc.parse_call("".join(text_parts)))
            finish = "tool_calls"
        elif auto_tools and finish == "stop" and tc.OPEN in tok.decode(generated):
            ids = self.ids + tok.encode("".join(text_parts) + tc.OPEN, add_bos=False)
            p2 = sampling_params(self.req, len(ids), self.model, self.limits, self.max_tokens, None, i)
            call_text = []
            req2 = Request(ids, p2, constraint=self.constraint(tc.call_schema(self.tools)))
            async for ev in stream_events(self.model, req2, timeout):
                call_text.append(ev.text)
                completion += 1
            await emit(i, "tool_call", tc.parse_call("".join(call_text)))
            finish = "tool_calls"
        await emit(i, "finish", (finish, completion))

    def _lp(self, ev) -> list[dict] | None:
        if ev.logprob is None:
            return None
        tok = self.model.tokenizer
        return [_lp_entry(token_text(tok, ev.token), tok.token_bytes(ev.token), ev.logprob,
                          [(token_text(tok, t), tok.token_bytes(t), lp) for t, lp in (ev.top_logprobs or [])])]


def _lp_entry(text: str, raw: bytes, logprob: float, tops: list) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(raw),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, b, lp in tops]}


async def _merged(job: ChatJob) -> AsyncIterator[tuple[int, str, object]]:
    """Run all choices concurrently; yield (choice, kind, payload) as they come."""
    queue: asyncio.Queue = asyncio.Queue()

    async def emit(i, kind, payload):
        await queue.put((i, kind, payload))

    async def run(i):
        try:
            await job.run_choice(i, emit)
        except BaseException as e:
            await queue.put((i, "error", e))
            raise

    tasks = [asyncio.create_task(run(i)) for i in range(job.req.n)]
    done = 0
    try:
        while done < len(tasks):
            i, kind, payload = await queue.get()
            if kind == "error":
                raise payload
            if kind == "finish":
                done += 1
            yield i, kind, payload
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _usage(job: ChatJob, completion: int) -> dict:
    return {"prompt_tokens": len(job.ids), "completion_tokens": completion,
            "total_tokens": len(job.ids) + completion}


async def complete(job: ChatJob, metrics) -> dict:
    n = job.req.n
    content = [[] for _ in range(n)]
    lps: list[list] = [[] for _ in range(n)]
    calls: list[list] = [[] for _ in range(n)]
    finish: list = [None] * n
    completion = 0
    async for i, kind, payload in _merged(job):
        if kind == "content":
            content[i].append(payload[0])
            lps[i].extend(payload[1] or [])
        elif kind == "tool_call":
            calls[i].append(payload)
        else:
            finish[i] = payload[0]
            completion += payload[1]
    metrics.observe(len(job.ids) * n, completion)
    choices = []
    for i in range(n):
        msg = {"role": "assistant", "content": None if calls[i] else "".join(content[i]), "refusal": None}
        if calls[i]:
            msg["tool_calls"] = calls[i]
        choices.append({"index": i, "message": msg, "finish_reason": finish[i],
                        "logprobs": {"content": lps[i], "refusal": None} if job.logprobs is not None else None})
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
            "model": job.model.name, "system_fingerprint": "groundup", "choices": choices,
            "usage": _usage(job, completion)}


async def stream(job: ChatJob, metrics) -> AsyncIterator[str]:
    cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    include_usage = bool(job.req.stream_options and job.req.stream_options.include_usage)

    def chunk(choices: list, usage: dict | None = None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": job.model.name,
                "system_fingerprint": "groundup", "choices": choices}
        if include_usage:
            body["usage"] = usage
        return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

    for i in range(job.req.n):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}])
    completion = 0
    try:
        async for i, kind, payload in _merged(job):
            if kind == "content":
                text, lp = payload
                if text or lp:
                    yield chunk([{"index": i, "delta": {"content": text},
                                  "logprobs": {"content": lp} if lp else None, "finish_reason": None}])
            elif kind == "tool_call":
                call = dict(payload, index=0)
                yield chunk([{"index": i, "delta": {"tool_calls": [call]}, "logprobs": None, "finish_reason": None}])
            else:
                completion += payload[1]
                yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": payload[0]}])
    except APIError as e:
        yield "data: " + json.dumps(e.body()) + "\n\n"
        return
    metrics.observe(len(job.ids) * job.req.n, completion)
    if include_usage:
        yield chunk([], _usage(job, completion))
    yield "data: [DONE]\n\n"
