"""The Arena's HTTP routes: anonymous side-by-side battles, votes, and the leaderboard.

    POST /arena/battles                     {"prompt", "system"?, "seed"?} -> {"id", "sides": ["A", "B"]}
    POST /arena/battles/{id}/answers/{A|B}  sampling fields -> that side's answer as SSE chunks
    POST /arena/battles/{id}/vote           {"winner": "A" | "B" | "tie" | "bad"} -> the names
    GET  /arena/leaderboard?bootstrap=200   Bradley-Terry ratings of all stored votes ("finite": false
                                            when some are only "far apart", see ratings.mle_is_finite)

A battle draws two different served models at random (from `seed` when given) and keeps which is
A and which is B on the server, under an unguessable id. Each side's answer is generated once, by
the same machinery as /v1/chat/completions (chat_api.ChatJob and chat_api.stream), for the
battle's prompt, with the model field of every chunk replaced by the side ("A" / "B"), so nothing
the page receives before the vote names a model. A vote is taken only after both answers finished
([DONE] sent), once per battle; it is stored in the vote store (eval/arena.py, SQLite) with the
prompt and both answers, and only its reply reveals the two names. Battles not voted on are
forgotten after an hour (at most MAX_PENDING are kept).
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from groundup.engine.scheduler import QueueFull
from groundup.eval.arena import Battle, VoteStore, normalise_winner
from groundup.server import chat_api
from groundup.server.generation import APIError, Limits, ServedModel
from groundup.server.protocol import ChatCompletionRequest, SamplingFields

MAX_PENDING = 1000
PENDING_TTL_S = 3600.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SIDES = ("A", "B")


class StartBattle(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(min_length=1)
    system: str | None = None
    seed: int | None = None


class AnswerParams(SamplingFields):
    """One side's sampling: the chat API's sampling fields and bounds (the model and prompt are the battle's)."""


class Vote(BaseModel):
    winner: Literal["A", "B", "tie", "bad"]


@dataclass
class PendingBattle:
    id: str
    models: dict[str, str]  # side -> served model name
    prompt: str
    system: str | None
    created: float = field(default_factory=time.time)
    started: set[str] = field(default_factory=set)
    answers: dict[str, str] = field(default_factory=dict)  # side -> full answer, once [DONE] was sent


def arena_router(models: dict[str, ServedModel], limits: Limits, metrics, store: VoteStore) -> APIRouter:
    router = APIRouter(prefix="/arena", tags=["arena"])
    pending: OrderedDict[str, PendingBattle] = OrderedDict()

    def forget_old() -> None:
        now = time.time()
        while pending and (len(pending) >= MAX_PENDING or now - next(iter(pending.values())).created > PENDING_TTL_S):
            pending.popitem(last=False)

    def battle_for(battle_id: str) -> PendingBattle:
        b = pending.get(battle_id)
        if b is None:
            raise APIError(404, "no open battle with this id (it was voted on, or is over an hour old); start a "
                                "new battle", "not_found_error", param="id", code="battle_not_found")
        return b

    @router.post("/battles")
    async def start(body: StartBattle) -> dict:
        if len(models) < 2:
            raise APIError(400, f"the arena needs at least two served models and this server has {len(models)}; "
                                "start it with two: groundup serve -m MODEL1 -m MODEL2", code="arena_needs_two_models")
        rng = random.Random(body.seed) if body.seed is not None else random.SystemRandom()
        a, b = rng.sample(sorted(models), 2)
        forget_old()
        battle = PendingBattle(secrets.token_urlsafe(18), {"A": a, "B": b}, body.prompt, body.system or None)
        pending[battle.id] = battle
        metrics.request("/arena/battles", 200)
        return {"id": battle.id, "sides": list(SIDES)}

    @router.post("/battles/{battle_id}/answers/{side}")
    async def answer(battle_id: str, side: Literal["A", "B"], body: AnswerParams):
        battle = battle_for(battle_id)
        if side in battle.started:
            raise APIError(409, f"side {side} of this battle was already answered; start a new battle",
                           code="already_answered")
        model = models[battle.models[side]]
        messages = ([{"role": "system", "content": battle.system}] if battle.system else []) + \
                   [{"role": "user", "content": battle.prompt}]
        req = ChatCompletionRequest.model_validate(
            {**body.model_dump(exclude_none=True), "model": model.name, "messages": messages, "stream": True,
             "stream_options": {"include_usage": True}})
        job = chat_api.ChatJob(req, model, limits)  # a prompt too long etc. answers 400 here
        if model.scheduler.queue_depth() + 1 > model.scheduler.max_queue:
            raise QueueFull(f"server busy: {model.scheduler.queue_depth()} requests already waiting; retry later")
        battle.started.add(side)
        metrics.request("/arena/battles/answers", 200)
        return StreamingResponse(_anonymous(chat_api.stream(job, metrics), battle, side),
                                 media_type="text/event-stream", headers=SSE_HEADERS)

    @router.post("/battles/{battle_id}/vote")
    async def vote(battle_id: str, body: Vote) -> dict:
        battle = battle_for(battle_id)
        missing = [s for s in SIDES if s not in battle.answers]
        if missing:
            raise APIError(409, f"vote after both answers have finished (not yet: {' and '.join(missing)})",
                           code="answers_unfinished")
        winner = normalise_winner(body.winner)
        record = Battle(battle.models["A"], battle.models["B"], winner, battle.id, battle.prompt,
                        battle.answers["A"], battle.answers["B"], time.time())
        pending.pop(battle_id, None)  # before the await: a second vote in flight finds no battle
        try:
            stored = await asyncio.to_thread(store.add, record)
        except (sqlite3.Error, OSError) as e:
            pending[battle_id] = battle  # nothing was stored: the vote may be tried again
            raise APIError(500, f"could not store the vote in {store.path} ({e}); try again",
                           "server_error") from None
        if not stored:
            raise APIError(409, "this battle already has a vote", code="already_voted")
        metrics.request("/arena/battles/vote", 200)
        return {"id": battle.id, "winner": body.winner, "model_a": record.model_a, "model_b": record.model_b}

    @router.get("/leaderboard")
    async def leaderboard(bootstrap: int = Query(200, ge=0, le=2000), seed: int = Query(0, ge=0)) -> dict:
        rows, n, finite = await asyncio.to_thread(_leaderboard, store, bootstrap, seed)
        metrics.request("/arena/leaderboard", 200)
        return {"battles": n, "bootstrap": bootstrap, "finite": finite, "models": rows}

    return router


def _leaderboard(store: VoteStore, bootstrap: int, seed: int) -> tuple[list[dict], int, bool]:
    from groundup.eval.ratings import leaderboard, mle_is_finite

    battles = store.battles()
    if not battles:
        return [], 0, True
    rows = leaderboard(battles, bootstrap=bootstrap, seed=seed)
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.as_dict().items()}
            for r in rows], len(battles), mle_is_finite(battles)


async def _anonymous(chunks: AsyncIterator[str], battle: PendingBattle, side: str) -> AsyncIterator[str]:
    """Pass chat chunks through with the model's name replaced by the side; keep the answer at [DONE]."""
    parts: list[str] = []
    async for sse in chunks:
        if sse.startswith("data: {"):
            body = json.loads(sse[6:])
            if "model" in body:
                body["model"] = side
            for choice in body.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
            sse = "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"
        elif sse.startswith("data: [DONE]"):
            battle.answers[side] = "".join(parts)
        yield sse
