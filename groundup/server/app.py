"""The FastAPI application: routes of the OpenAI-compatible API, the web chat, health and metrics.

`create_app(models, limits, api_keys)` wires the pieces: guard.py (keys,
rate limit, body size) in front; chat_api.py and completions_api.py for
generation; /tokenize, /detokenize and /tokenizer_info; /metrics; the static web chat at `/`;
arena_api.py for the Arena (/arena/...), whose votes go to the SQLite file
`arena_db` (default <groundup cache>/arena.sqlite, created at the first vote).
Every error leaves in OpenAI's JSON shape with the fitting status code:
400 bad request, 401 key, 404 unknown model/route, 413 body, 429 rate,
503 queue full, 504 timeout.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from groundup.engine.scheduler import QueueFull
from groundup.errors import GroundupError
from groundup.eval.arena import VoteStore, default_db_path
from groundup.server import arena_api, chat_api, completions_api
from groundup.server.generation import APIError, Limits, ServedModel, token_text
from groundup.server.guard import Guard
from groundup.server.metrics import Metrics
from groundup.server.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from groundup.server.tool_calls import prepare_messages

STATIC = Path(__file__).parent / "static"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _err(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def create_app(models: dict[str, ServedModel], limits: Limits | None = None,
               api_keys: list[str] | None = None, arena_db: str | Path | None = None) -> Guard:
    limits = limits or Limits()
    metrics = Metrics()
    app = FastAPI(title="groundup", version="0.1.0",
                  description="OpenAI-compatible API over groundup's inference engine.")
    app.state.models, app.state.metrics = models, metrics

    def model_for(name: str | None) -> ServedModel:
        if name is None or name == "":
            return next(iter(models.values()))
        if name not in models:
            raise APIError(404, f"model {name!r} is not served here; GET /v1/models lists "
                                f"{', '.join(models)}", param="model", code="model_not_found")
        return models[name]

    def admit(m: ServedModel, n: int) -> None:
        """Refuse (503) before streaming starts when the queue cannot take n more requests."""
        if m.scheduler.queue_depth() + n > m.scheduler.max_queue:
            raise QueueFull(f"server busy: {m.scheduler.queue_depth()} requests already waiting; retry later")

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        metrics.request(request.url.path, e.status)
        return _err(e)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, e: QueueFull):
        metrics.request(request.url.path, 503)
        return _err(APIError(503, str(e), "server_overloaded", code="queue_full"))

    @app.exception_handler(GroundupError)
    async def _bad_input(request: Request, e: GroundupError):
        metrics.request(request.url.path, 400)
        return _err(APIError(400, str(e)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        else:
            where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
            msg = f"{where or 'body'}: {first.get('msg', 'invalid')}"
        metrics.request(request.url.path, 400)
        return _err(APIError(400, msg, param=where if first.get("type") != "json_invalid" else None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _err(APIError(e.status_code, str(e.detail) if e.status_code != 404 else
                             f"no route {request.method} {request.url.path}", kind))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        metrics.request(request.url.path, 500)
        return _err(APIError(500, f"internal error: {type(e).__name__}", "server_error"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text() -> str:
        return metrics.render(models)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [_model_card(m) for m in models.values()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict:
        return _model_card(model_for(model_id))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        job = chat_api.ChatJob(body, model_for(body.model), limits)
        admit(job.model, body.n)
        metrics.request("/v1/chat/completions", 200)
        if body.stream:
            return StreamingResponse(chat_api.stream(job, metrics), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        return await _until_disconnect(request, chat_api.complete(job, metrics))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        job = completions_api.CompletionJob(body, model_for(body.model), limits)
        admit(job.model, len(job.prompts) * body.n)
        if body.stream:
            agen = completions_api.stream(job, metrics)
            first = await agen.__anext__()  # errors in the request answer 400 before streaming starts
            metrics.request("/v1/completions", 200)
            return StreamingResponse(_prepend(first, agen), media_type="text/event-stream", headers=SSE_HEADERS)
        metrics.request("/v1/completions", 200)
        return await _until_disconnect(request, completions_api.complete(job, metrics))

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        m = model_for(body.model)
        tok = m.tokenizer
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give exactly one of prompt or messages", param="prompt")
        if body.prompt is not None:
            ids = tok.encode(body.prompt, add_bos=None if body.add_special_tokens else False)
        else:
            msgs = prepare_messages([x.model_dump(exclude_none=True) for x in body.messages], None)
            ids = tok.encode_chat(msgs)
        return {"tokens": ids, "pieces": [token_text(tok, t) for t in ids], "count": len(ids),
                "max_model_len": m.context_length}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict:
        m = model_for(body.model)
        vocab = m.engine.cfg.vocab_size
        if any(not 0 <= t < vocab for t in body.tokens):
            raise APIError(400, f"tokens must be ids in [0, {vocab})", param="tokens")
        return {"prompt": m.tokenizer.decode(body.tokens)}

    @app.get("/tokenizer_info")
    async def tokenizer_info(model: str | None = None) -> dict:
        """vLLM's shape, which lm-evaluation-harness's `remote` tokenizer backend reads."""
        m = model_for(model)
        tok = m.tokenizer
        text = lambda t: None if t is None else token_text(tok, t)  # noqa: E731
        return {"tokenizer_class": "groundup", "bos_token": text(tok.bos_id), "eos_token": text(tok.eos_id),
                "pad_token": None, "add_bos_token": tok.add_bos, "model_max_length": m.context_length,
                "chat_template": tok.chat_template if isinstance(tok.chat_template, str) else None}

    app.include_router(arena_api.arena_router(models, limits, metrics,
                                              VoteStore(arena_db if arena_db is not None else default_db_path())))

    @app.get("/", include_in_schema=False)
    async def index():
        page = STATIC / "index.html"
        if not page.exists():
            raise APIError(404, "the web chat page is not installed", "not_found_error")
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    inflight = sum(m.scheduler.max_queue + m.engine.max_batch for m in models.values()) + 32
    return Guard(app, api_keys or [], limits.max_body_bytes, limits.rate_limit_per_min, inflight)


def _model_card(m: ServedModel) -> dict:
    return {"id": m.name, "object": "model", "created": m.created, "owned_by": "groundup",
            "context_length": m.context_length}


async def _prepend(first: str, agen):
    yield first
    async for x in agen:
        yield x


async def _until_disconnect(request: Request, coro):
    """Await coro, but cancel it (and so its engine requests) if the client goes away."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                return JSONResponse({"error": {"message": "client disconnected", "type": "cancelled"}},
                                    status_code=499)
    finally:
        if not task.done():
            task.cancel()
