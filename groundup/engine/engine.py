"""Engine: batched generation over a preallocated KV cache, as a stream of token events.

`add(request)` queues a request; each `step()` admits waiting requests
(prefilling each into its own cache row, reusing the longest cached prefix —
see prefix.py), then decodes all active rows together, one token each. Rows
that finish (EOS, stop string, max tokens, full context, cancel) leave the
batch and waiting requests take their place: continuous batching. The batch is
kept contiguous in the cache by moving the last row into the hole, so decode
reads the cache through views, never copies. Every sampled token becomes a
`TokenEvent` carrying the text it adds (UTF-8 safe, stop strings held back
until they can no longer match). `generate(requests)` runs a fixed list to
completion; the server's scheduler thread calls `add`/`step`/`cancel` itself.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Iterator

import torch

from groundup.engine.detok import IncrementalDecoder
from groundup.engine.kvcache import KVCache
from groundup.engine.prefix import PrefixCache
from groundup.engine.sampling import SamplingParams, SequenceSampler, sample_batch
from groundup.errors import GroundupError


@dataclass
class Request:
    prompt: str | list[int]  # text (encoded as plain text with BOS per the tokenizer) or token ids
    params: SamplingParams = field(default_factory=SamplingParams)
    id: int | str | None = None
    constraint: object | None = None  # per-sequence token mask state (engine/constrain.py)


@dataclass
class TokenEvent:
    index: Hashable  # the key given to add() (for generate(): position in its list)
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
    index: Hashable
    prompt_ids: list[int]
    params: SamplingParams
    sampler: SequenceSampler
    decoder: IncrementalDecoder
    tokens: list[int] = field(default_factory=list)  # prompt + sampled; K/V cached for tokens[:pos]
    pos: int = 0  # tokens in the cache
    last: int = 0  # last sampled token (next decode input)
    generated: int = 0
    stop_ids: frozenset[int] = frozenset()
    done: bool = False


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens not recomputed thanks to the prefix cache
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0


class Engine:
    """Runs a `Transformer` with a `Tokenizer`: prefill, incremental decode, sampling, streaming."""

    def __init__(self, model, tokenizer, max_batch: int = 8, max_len: int | None = None,
                 prefill_chunk: int = 1024, fuse: bool = True, prefix_slots: int = 0) -> None:
        """fuse: merge Q/K/V and gate/up projections in place (engine/fuse.py) — fewer matmuls per token.
        prefix_slots: spare cache rows that keep finished sequences for prefix reuse (0 = reuse only
        prefixes of sequences still running)."""
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
        self.prefix = PrefixCache(max_batch, prefix_slots)
        self.stats = GenerationStats()
        self.forward = model.forward  # the decode/prefill callable; optimizations may replace it
        self.waiting: deque[_Seq] = deque()
        self.active: list[_Seq] = []

    # -- public API ------------------------------------------------------
    def encode_prompt(self, prompt: str | list[int]) -> list[int]:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise GroundupError("empty prompt: give at least one token of text")
        if len(ids) >= self.max_len:
            raise GroundupError(f"prompt is {len(ids)} tokens but the context holds {self.max_len}; "
                                f"shorten it (or raise max_len, up to the model's {self.cfg.context_length})")
        return ids

    def add(self, request: Request, key: Hashable) -> None:
        """Queue a request; its TokenEvents carry `key` as their index. Raises GroundupError on bad input."""
        request.params.validate()
        ids = self.encode_prompt(request.prompt)
        self.waiting.append(self._new_seq(key, ids, request.params, request.constraint))

    def cancel(self, key: Hashable) -> bool:
        """Stop a queued or running request; it emits no more events. True when it was found."""
        for s in self.waiting:
            if s.index == key:
                self.waiting.remove(s)
                return True
        for s in self.active:
            if s.index == key and not s.done:
                s.done = True
                return True
        return False

    def has_work(self) -> bool:
        return bool(self.waiting or self.active)

    def step(self) -> list[TokenEvent]:
        """Admit waiting requests while rows are free, then decode every active row by one token."""
        events: list[TokenEvent] = []
        while (ev := self.admit_next()) is not None:
            events.append(ev)
        events.extend(self.decode())
        return events

    def admit_next(self) -> TokenEvent | None:
        """Prefill the next waiting request into a free row and return its first token's event
        (None when nothing waits or no row is free). The scheduler delivers each first token as
        soon as it exists, so time-to-first-token does not wait for other prompts' prefill."""
        if not self.waiting or len(self.active) >= self.max_batch:
            return None
        if self.cache is None:
            self.cache = KVCache(self.cfg, self.max_batch + len(self.prefix.slots), self.max_len,
                                 self.dtype, self.device)
        with torch.inference_mode():
            self._compact()
            seq = self.waiting.popleft()
            ev = self._prefill(seq, len(self.active))
            self.active.append(seq)
            if ev.finished:
                self._compact()
        return ev

    def decode(self) -> list[TokenEvent]:
        """One decode step for every active row."""
        with torch.inference_mode():
            self._compact()
            if not self.active:
                return []
            events = self._decode_step(self.active)
            self._compact()
        return events

    def generate(self, requests: Request | Iterable[Request]) -> Iterator[TokenEvent]:
        """Yield TokenEvents for all requests, interleaved, until every one has finished."""
        reqs = [requests] if isinstance(requests, Request) else list(requests)
        for r in reqs:
            r.params.validate()
            self.encode_prompt(r.prompt)  # every prompt checked before any work starts
        for i, r in enumerate(reqs):
            self.add(r, i)
        while self.has_work():
            yield from self.step()

    def generate_text(self, prompt: str | list[int], params: SamplingParams | None = None) -> str:
        return "".join(ev.text for ev in self.generate(Request(prompt, params or SamplingParams())))

    def score(self, ids: list[int], top: int = 0) -> list[tuple[float, list[tuple[int, float]]]]:
        """Log-probability of each token given the ones before it (the first gets 0.0), with the
        `top` most likely alternatives at each position: what `echo` + `logprobs` report."""
        if len(ids) > self.cfg.context_length:
            raise GroundupError(f"text is {len(ids)} tokens; the model's context holds {self.cfg.context_length}")
        out: list[tuple[float, list[tuple[int, float]]]] = [(0.0, [])]
        with torch.inference_mode():
            logits = self.forward(torch.tensor([ids], device=self.device))[0]
            for s in range(0, len(ids) - 1, 256):
                lp = torch.log_softmax(logits[s:min(s + 256, len(ids) - 1)].float(), dim=-1)
                nxt = torch.tensor(ids[s + 1:s + 1 + lp.shape[0]], device=self.device)
                chosen = lp.gather(1, nxt[:, None])[:, 0].tolist()
                tops = lp.topk(top, dim=-1) if top else None
                for j, c in enumerate(chosen):
                    alts = list(zip(tops.indices[j].tolist(), tops.values[j].tolist())) if tops is not None else []
                    out.append((c, alts))
        return out

    # -- internals -------------------------------------------------------
    def _new_seq(self, key: Hashable, ids: list[int], params: SamplingParams, constraint=None) -> _Seq:
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= set(self.tokenizer.eos_ids)
        extra = {"constraint": constraint} if constraint is not None else {}
        sampler = SequenceSampler(params, self.cfg.vocab_size, ids, device=self.device, **extra)
        return _Seq(key, ids, params, sampler, IncrementalDecoder(self.tokenizer, params.stop),
                    tokens=list(ids), stop_ids=frozenset(stop_ids))

    def _prefill(self, seq: _Seq, slot: int) -> TokenEvent:
        t0 = time.perf_counter()
        ids = seq.prompt_ids
        live = {i: s.tokens[:s.pos] for i, s in enumerate(self.active)}
        src, start = self.prefix.best(ids, live)
        if src is not None:
            self.cache.copy_slot(src, slot, start)
            self.stats.cached_prompt_tokens += start
        logits = None
        for s in range(start, len(ids), self.prefill_chunk):
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
        seq.tokens.append(token)
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

    def _compact(self) -> None:
        """Drop finished rows (parking them for prefix reuse); move the last row into each hole."""
        active = self.active
        i = 0
        while i < len(active):
            if active[i].done:
                self._park(i, active[i])
                last = active.pop()
                if i < len(active):
                    self.cache.copy_slot(len(active), i, last.pos)
                    active[i] = last
                continue
            i += 1

    def _park(self, row: int, seq: _Seq) -> None:
        slot = self.prefix.park_slot()
        if slot is None or seq.pos < self.prefix.min_reuse:
            return
        self.cache.copy_slot(row, slot, seq.pos)
        self.prefix.park(slot, seq.tokens[:seq.pos])


def _act_dtype(model) -> torch.dtype:
    for name, p in model.named_parameters():
        if "norm" not in name and p.is_floating_point():
            return p.dtype
    return torch.float32
