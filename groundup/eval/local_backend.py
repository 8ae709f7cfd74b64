"""Evaluation requests answered by an in-process groundup model, batched, reusing shared contexts.

Log-likelihood requests are grouped by context. Each group's context is run
once (several contexts per forward pass, padded), its keys/values are copied
into one cache row per continuation, and all continuations of the group are
scored in one more batched pass that attends to the shared prefix: a
4-choice ARC item costs one context plus four short continuations instead of
four full sequences.

Tokenization follows lm-evaluation-harness: context and continuation are
encoded together and split where the context's own encoding ends (trailing
spaces of the context move to the continuation first), so a continuation
that merges with the context's last characters is scored the same way.

Rolling log-likelihoods (perplexity, bits per byte) cut the text into
disjoint windows of the context length, each predicted from the token before
it (the first from BOS/EOS), exactly like lm-evaluation-harness's rolling
windows with context length 1. Generation goes through the Engine
(continuous batching, stop strings).
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch

from groundup.eval.task import Generate, Loglikelihood, Rolling

Progress = Callable[[int], None]


class LocalBackend:
    def __init__(self, model, tokenizer, batch_tokens: int = 2048, max_len: int | None = None,
                 identity: str | None = None, compile: bool = False) -> None:
        """batch_tokens: rows x length budget of one forward pass (bounds activation memory);
        compile: generate through the compiled decode step (engine/compiled.py)."""
        self.model, self.tok = model, tokenizer
        self.max_len = min(model.cfg.context_length, max_len or 2048)
        self.batch_tokens = batch_tokens
        self.device = next(model.parameters()).device
        self.identity = identity or _model_identity(model)
        self._engine = None
        self.compile = compile

    # -- log-likelihood ----------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_space = len(context) - len(context.rstrip(" "))
        if n_space:
            context, continuation = context[:-n_space], context[-n_space:] + continuation
        ctx = self.tok.encode(context)
        whole = self.tok.encode(context + continuation)
        if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx):]
        return ctx, self.tok.encode(continuation, add_bos=False)

    def loglikelihood(self, reqs: list[Loglikelihood], progress: Progress = lambda n: None) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(r.context, r.continuation) for r in reqs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append(i)
        out: list[tuple[float, bool] | None] = [None] * len(reqs)
        batch: list[tuple[tuple[int, ...], list[int]]] = []
        cost = 0
        # longest contexts first: similar lengths share a pass with little padding
        for ctx, idx in sorted(groups.items(), key=lambda kv: -len(kv[0])):
            c = len(ctx) + sum(len(pairs[i][1]) for i in idx)
            if batch and cost + c > self.batch_tokens:
                self._score_groups(batch, pairs, out)
                progress(sum(len(b[1]) for b in batch))
                batch, cost = [], 0
            batch.append((ctx, idx))
            cost += c
        if batch:
            self._score_groups(batch, pairs, out)
            progress(sum(len(b[1]) for b in batch))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_groups(self, groups, pairs, out) -> None:
        from groundup.engine.kvcache import KVCache

        model, dev = self.model, self.device
        # contexts too long for the window keep their most recent tokens
        rows = [(list(ctx), [pairs[i][1] for i in idx]) for ctx, idx in groups]
        rows = [(self._fit(ctx, conts), conts) for ctx, conts in rows]
        n_ctx = [len(c) for c, _ in rows]
        conts = [c for _, cs in rows for c in cs]
        owner = [g for g, (_, cs) in enumerate(rows) for _ in cs]
        cmax, tmax = max(n_ctx), max(len(c) for c in conts)
        cache = KVCache(model.cfg, max(len(rows), len(conts)), cmax + tmax, _dtype(model), dev)
        ids = _padded([c for c, _ in rows], cmax)
        h = model.hidden(ids.to(dev), torch.zeros(len(rows), dtype=torch.long, device=dev), cache, slice(0, len(rows)))
        ctx_last = h[torch.arange(len(rows)), torch.tensor(n_ctx) - 1]  # [G, dim]: predicts each first token
        # copy each context's cache into its continuations' rows (backwards: sources are rows 0..G-1)
        for j in reversed(range(len(conts))):
            cache.copy_slot(owner[j], j, n_ctx[owner[j]])
        pos = torch.tensor([n_ctx[owner[j]] for j in range(len(conts))], device=dev)
        hc = model.hidden(_padded(conts, tmax).to(dev), pos, cache, slice(0, len(conts)))  # [N, T, dim]
        # the states that predict each continuation: its context's last, then its own but the last
        states = torch.cat([torch.cat([ctx_last[owner[j]][None], hc[j, :len(c) - 1]]) for j, c in enumerate(conts)])
        lp, top = self._logprobs(states, [t for c in conts for t in c])
        flat = [i for _, idx in groups for i in idx]
        s = 0
        for j, c in enumerate(conts):
            out[flat[j]] = (float(lp[s:s + len(c)].sum()), bool(top[s:s + len(c)].all()))
            s += len(c)

    def _logprobs(self, states: torch.Tensor, targets: list[int], chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """log P(target) and whether it is the argmax, for each [dim] state; the LM head runs on
        `chunk` states at a time, so a long window never holds [T, vocab] logits at once."""
        tgt = torch.tensor(targets, device=states.device)
        lps, tops = [], []
        for s in range(0, len(targets), chunk):
            logits = self.model.head(states[None, s:s + chunk])[0].float()
            t = tgt[s:s + chunk, None]
            lps.append((logits.gather(1, t) - torch.logsumexp(logits, dim=-1, keepdim=True))[:, 0])
            tops.append(logits.argmax(-1) == t[:, 0])
        return torch.cat(lps), torch.cat(tops)

    def _fit(self, ctx: list[int], conts: list[list[int]]) -> list[int]:
        room = self.max_len - max(len(c) for c in conts)
        return ctx[-room:] if len(ctx) > room else ctx

    # -- rolling -----------------------------------------------------------
    @torch.inference_mode()
    def rolling(self, reqs: list[Rolling], progress: Progress = lambda n: None) -> list[tuple[float, int]]:
        """(sum of log P over every token of the text, token count) per request."""
        prefix = self.tok.bos_id if self.tok.bos_id is not None else self.tok.eos_id
        out = []
        for r in reqs:
            toks = self.tok.encode(r.text, add_bos=False)
            total = 0.0
            for s in range(0, len(toks), self.max_len):
                window = toks[s:s + self.max_len]
                inp = ([prefix] if s == 0 else [toks[s - 1]]) + window[:-1]
                h = self.model.hidden(torch.tensor([inp], device=self.device))[0]
                total += float(self._logprobs(h, window)[0].sum())
            out.append((total, len(toks)))
            progress(1)
        return out

    # -- generation --------------------------------------------------------
    def generate(self, reqs: list[Generate], progress: Progress = lambda n: None, seed: int = 1234) -> list:
        from groundup.engine.engine import Engine, Request
        from groundup.engine.sampling import SamplingParams

        if self._engine is None:
            self._engine = Engine(self.model, self.tok, max_batch=8, max_len=self.max_len)
            if self.compile:
                from groundup.engine.compiled import compile_engine

                compile_engine(self._engine)
        reqs_out: list[Request] = []
        owner: list[int] = []
        for i, r in enumerate(reqs):
            prompt = (self.tok.encode_chat([dict(m) for m in r.context]) if isinstance(r.context, tuple)
                      else self.tok.encode(r.context))
            room = self.max_len - r.max_tokens - 1
            prompt = prompt[-room:] if len(prompt) > room else prompt
            for k in range(r.n):
                params = SamplingParams(temperature=r.temperature, max_tokens=r.max_tokens, stop=list(r.until),
                                        seed=seed + k if r.temperature > 0 else None)
                reqs_out.append(Request(prompt, params))
                owner.append(i)
        texts = [""] * len(reqs_out)
        for ev in self._engine.generate(reqs_out):
            texts[ev.index] += ev.text
            if ev.finished:
                progress(1)
        results: list = [[] for _ in reqs]
        for j, t in enumerate(texts):
            results[owner[j]].append(t)
        return [r[0] if req.n == 1 else r for r, req in zip(results, reqs)]


def _padded(seqs: list[list[int]], width: int) -> torch.Tensor:
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, c in enumerate(seqs):
        ids[i, :len(c)] = torch.tensor(c)
    return ids


def _dtype(model) -> torch.dtype:
    from groundup.engine.engine import _act_dtype

    return _act_dtype(model)


def _model_identity(model) -> str:
    """A stable id for caching: the source file's recorded identity, else a hash of the config."""
    src = getattr(model, "source_id", None)
    if src:
        return src
    return "cfg-" + hashlib.sha256(repr(model.cfg).encode()).hexdigest()[:16]
