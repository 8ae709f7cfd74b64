"""Engine: batched generation over a preallocated KV cache, as a stream of token events.

`Engine(model, tokenizer).generate(requests)` prefills each prompt into its own
cache row, then decodes all active rows together one token per step. Rows
that finish (EOS, stop string, max tokens, full context) leave the batch and
waiting requests take their place (continuous batching); the batch is kept
contiguous in the cache by moving the last row into the hole, so decode reads
the cache through views, never copies. Every sampled token becomes a
`TokenEvent` carrying the text it adds (UTF-8 safe, stop strings held back
until they can no longer match).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from groundup.engine.detok import IncrementalDecoder
from groundup.engine.kvcache import KVCache
from groundup.engine.sampling import SamplingParams, SequenceSampler, sample_batch
from groundup.errors import GroundupError


@dataclass
class Request:
    prompt: str | list[int]  # text (encoded as plain text with BOS per the tokenizer) or token ids
    params: SamplingParams = field(default_factory=SamplingParams)
    id: int | str | None = None


@dataclass
class TokenEvent:
    index: int  # position of the request in the list given to generate()
    token: int
    text: str  # text this token adds to the visible output (may be "" while held back)
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # "stop" | "length" | None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class _Seq:
    index: int
    prompt_ids: list[int]
    params: SamplingParams
    sampler: SequenceSampler
    decoder: IncrementalDecoder
    pos: int = 0  # tokens in the cache
    last: int = 0  # last sampled token (next decode input)
    generated: int = 0
    stop_ids: frozenset[int] = frozenset()
    done: bool = False


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0


class Engine:
    """Runs a `Transformer` with a `Tokenizer`: prefill, incremental decode, sampling, streaming."""

    def __init__(self, model, tokenizer, max_batch: int = 8, max_len: int | None = None,
                 prefill_chunk: int = 1024, fuse: bool = True) -> None:
        """fuse: merge Q/K/V and gate/up projections in place (engine/fuse.py) — fewer matmuls per token."""
        if fuse:
            from groundup.engine.fuse import fuse_projections

            fuse_projections(model)
        self.model, self.tokenizer = model, tokenizer
        self.cfg = model.cfg
        self.max_batch = max_batch
        self.max_len = min(self.cfg.context_length, max_len or 4096)
        self.prefill_chunk = prefill_chunk
        p = next(model.parameters())
        self.device, self.dtype = p.device, _act_dtype(model)
        self.cache: KVCache | None = None
        self.stats = GenerationStats()
        self.forward = model.forward  # the decode/prefill callable; optimizations may replace it

    # -- public API ------------------------------------------------------
    def encode_prompt(self, prompt: str | list[int]) -> list[int]:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise GroundupError("empty prompt: give at least one token of text")
        if len(ids) >= self.max_len:
            raise GroundupError(f"prompt is {len(ids)} tokens but the context holds {self.max_len}; "
                                f"shorten it (or raise max_len, up to the model's {self.cfg.context_length})")
        return ids

    def generate(self, requests: Request | Iterable[Request]) -> Iterator[TokenEvent]:
        """Yield TokenEvents for all requests, interleaved, until every one has finished."""
        reqs = [requests] if isinstance(requests, Request) else list(requests)
        for r in reqs:
            r.params.validate()
        queue = deque((i, self.encode_prompt(r.prompt), r.params) for i, r in enumerate(reqs))
        if self.cache is None:
            self.cache = KVCache(self.cfg, self.max_batch, self.max_len, self.dtype, self.device)
        active: list[_Seq] = []
        with torch.inference_mode():
            while queue or active:
                while queue and len(active) < self.max_batch:
                    i, ids, params = queue.popleft()
                    seq = self._new_seq(i, ids, params)
                    ev = self._prefill(seq, len(active))
                    yield ev
                    if not ev.finished:
                        active.append(seq)
                if not active:
                    continue
                for ev in self._decode_step(active):
                    yield ev
                self._compact(active)

    def generate_text(self, prompt: str | list[int], params: SamplingParams | None = None) -> str:
        return "".join(ev.text for ev in self.generate(Request(prompt, params or SamplingParams())))

    # -- internals -------------------------------------------------------
    def _new_seq(self, index: int, ids: list[int], params: SamplingParams) -> _Seq:
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= set(self.tokenizer.eos_ids)
        sampler = SequenceSampler(params, self.cfg.vocab_size, ids, device=self.device)
        return _Seq(index, ids, params, sampler, IncrementalDecoder(self.tokenizer, params.stop),
                    stop_ids=frozenset(stop_ids))

    def _prefill(self, seq: _Seq, slot: int) -> TokenEvent:
        t0 = time.perf_counter()
        ids = seq.prompt_ids
        logits = None
        for s in range(0, len(ids), self.prefill_chunk):
            chunk = torch.tensor([ids[s:s + self.prefill_chunk]], device=self.device)
            pos = torch.tensor([s], device=self.device)
            logits = self.forward(chunk, pos, self.cache, slice(slot, slot + 1), last_only=True)
        seq.pos = len(ids)
        self.stats.prompt_tokens += len(ids)
        self.stats.prefill_s += time.perf_counter() - t0
        return self._emit(seq, logits[0, -1].float())

    def _decode_step(self, active: list[_Seq]) -> list[TokenEvent]:
        t0 = time.perf_counter()
        B = len(active)
        tokens = torch.tensor([[s.last] for s in active], device=self.device)
        pos = torch.tensor([s.pos for s in active], device=self.device)
        logits = self.forward(tokens, pos, self.cache, slice(0, B), last_only=True)[:, -1].float()
        for s in active:
            s.pos += 1
        chosen = sample_batch([s.sampler for s in active], logits)
        events = [self._emit(s, logits[b], chosen[b]) for b, s in enumerate(active)]
        self.stats.decode_s += time.perf_counter() - t0
        return events

    def _emit(self, seq: _Seq, logits: torch.Tensor, token: int | None = None) -> TokenEvent:
        if token is None:
            token = seq.sampler.sample(logits)
        seq.sampler.accept(token)
        seq.last = token
        seq.generated += 1
        self.stats.generated_tokens += 1
        lp = top = None
        if seq.params.logprobs is not None:
            lp, top = seq.sampler.logprobs_of(logits, token, seq.params.logprobs)
        finish = None
        if token in seq.stop_ids:
            text, finish = seq.decoder.finish(), "stop"
        else:
            text, hit = seq.decoder.push(token)
            if hit:
                finish = "stop"
            elif seq.generated >= seq.params.max_tokens or seq.pos + 1 >= self.max_len:
                text += seq.decoder.finish()
                finish = "length"
        seq.done = finish is not None
        return TokenEvent(seq.index, token, text, lp, top, finish)

    def _compact(self, active: list[_Seq]) -> None:
        """Drop finished rows; move the last row into each hole so rows stay 0..B-1."""
        i = 0
        while i < len(active):
            if active[i].done:
                last = active.pop()
                if i < len(active):
                    self.cache.copy_slot(len(active), i, last.pos)
                    active[i] = last
                continue
            i += 1


def _act_dtype(model) -> torch.dtype:
    for name, p in model.named_parameters():
        if "norm" not in name and p.is_floating_point():
            return p.dtype
    return torch.float32
