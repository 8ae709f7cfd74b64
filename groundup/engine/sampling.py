"""Sampling: turn one decode step's logits into the next token, per sequence.

`SamplingParams` holds the OpenAI request fields plus top_k / min_p / seed;
`SequenceSampler` holds one sequence's sampling state (params, its own
`torch.Generator`, token counts for the penalties); `sample_batch` samples a
whole decode batch, with a single batched argmax when every row is plain greedy.

The chain, in order (vLLM / llama.cpp semantics):

1. logit_bias          logit[id] += bias                      (OpenAI)
2. repetition penalty  on ids seen in prompt + output:        (CTRL)
                       logit > 0 -> logit / p, else logit * p
3. presence/frequency  on ids generated so far:               (OpenAI)
                       logit -= presence * (count > 0) + frequency * count
4. greedy              temperature == 0 (or top_k == 1): argmax, no RNG use
5. temperature         logit / T
6. top-k               keep the k largest logits
7. top-p               keep the smallest set, most probable first, whose
                       cumulative probability (renormalised after top-k)
                       reaches top_p; always at least one token
8. min-p               keep tokens with prob >= min_p * max_prob, i.e.
                       logit >= max_logit + log(min_p)
9. softmax + draw      inverse CDF with one uniform from the sequence's generator

Speed (this runs every decoded token over 50k-260k vocabularies; nothing sorts
the vocabulary): plain greedy (no bias/penalties) is one argmax; penalties touch
only the ids that occur (an index buffer; output counts in a dense tensor
updated in place); top-k is `torch.topk`, top-p after it works on those k;
top-p alone tries a `topk` of the size this sequence needed last time, and when
that misses top_p of the mass, a probability-weighted histogram finds the bin
where the mass crosses top_p and sorts only that bin (`_threshold`); the draw
is inverse-CDF in two levels, chunk then token (`_inverse_cdf`). Every exp()
over the vocab floors its exponent at -80: float32 exp of underflowing or -inf
inputs is 10-50x slower on CPU, and e^-80 relative mass is never drawn in
practice (the uniform would have to land within 1e-35 of a CDF step).

`sample` does not record the token: the caller calls `accept(token)` once the
token is committed (after its own stop checks), which updates the penalty counts.

Constrained decoding (engine/constrain.py): a sampler made with `constraint=` sets the
logits of the tokens the constraint does not allow to -inf before step 1, in `sample` and
`process` (so in `sample_batch` too; such a row never takes the batched-argmax shortcut,
unconstrained rows are untouched), and `accept(token)` advances the constraint.
`logprobs_of` stays on the raw distribution (the model's logprobs, not renormalised over
the allowed tokens), like the penalties and temperature it already leaves out.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from groundup.errors import GroundupError

from groundup.engine.params import MAX_LOGPROBS, SamplingParams  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from groundup.engine.constrain import Constraint

_TOPK_MIN, _TOPK_MAX = 64, 1024  # topk sizes tried for top-p before the histogram
_HIST_BINS, _HIST_RANGE = 2048, 30.0  # histogram: bins over [max - 30, max] of scaled logits
_SORT_MAX = 8192  # sort the boundary bin once it holds at most this many tokens
_CHUNK = 1024  # draw over long vectors: pick a chunk of this size, then a token in it
_EXP_FLOOR = -80.0  # see the module docstring


# Steps 5-8 leave (vals, ids, weights): scaled logits of the candidates and their
# ids (None: vals is the whole vocab). weights, when set (flat top-p, cheaper than
# gathering), are exp(vals - max) over the whole vocab with dropped tokens at 0.
_Cands = tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]


def _rel_exp(x: torch.Tensor, m: torch.Tensor | float) -> torch.Tensor:
    """exp(x - m) as a new tensor, the exponent floored at _EXP_FLOOR."""
    return torch.sub(x, m).clamp_(min=_EXP_FLOOR).exp_()


def _threshold(s: torch.Tensor, e: torch.Tensor, m: torch.Tensor, target: torch.Tensor
               ) -> torch.Tensor | None:
    """Top-p cut over the whole vocab: the weight e_b of the last token kept when
    tokens are taken by decreasing s until their weights e = exp(s - m) (m = max s)
    sum to `target`; None when every token is needed.

    Bins are floor((hi - s) / width), monotone in s, so every token of a bin
    above the crossing bin outranks every token in it; the crossing bin is
    refined with a finer histogram until small, then sorted. Tokens more than
    _HIST_RANGE below the max share the last bin (mass < V * e^-30, negligible)."""
    if not bool(target > 0):
        raise GroundupError("cannot sample: the logits are NaN or all -inf")
    hi, width = m, _HIST_RANGE / _HIST_BINS
    above = torch.zeros((), dtype=e.dtype, device=e.device)  # mass of bins already kept
    for _ in range(4):
        b = ((hi - s) * (1.0 / width)).clamp_(0, _HIST_BINS - 1).int()
        mass = torch.zeros(_HIST_BINS, dtype=e.dtype, device=e.device).index_add_(0, b, e)
        cum = mass.cumsum(0) + above
        j = min(int(torch.searchsorted(cum, target.reshape(1)).item()), _HIST_BINS - 1)
        if j > 0:
            above = cum[j - 1]
        sel = torch.nonzero(b == j).squeeze(1)
        s, e = s[sel], e[sel]
        if s.numel() <= _SORT_MAX:
            break
        hi, width = hi - j * width, width / _HIST_BINS
    if s.numel() == 0:  # float rounding put top_p out of reach: keep everything
        return None
    order = torch.sort(s, descending=True).indices
    ev = e[order]
    n = max(1, int(((ev.cumsum(0) - ev + above) < target).sum().item()))
    return ev[n - 1]


def _keep_at_least(w: torch.Tensor, floor: torch.Tensor | float) -> torch.Tensor:
    """Zero, in place, the weights below `floor` (one pass, no boolean mask)."""
    f = torch.as_tensor(floor, dtype=w.dtype)
    return F.threshold_(w, float(torch.nextafter(f, torch.zeros_like(f))), 0.0)


def _inverse_cdf(e: torch.Tensor, f: float) -> int:
    """Index i with probability e[i] / e.sum() (e >= 0, max 1) for f uniform in (0, 1].

    Over 8 * _CHUNK entries it goes in two levels: a chunk drawn by its mass,
    then a token inside it with the remainder of f, so the cumsum runs over
    the chunk masses and one chunk instead of the whole vocab. The target
    x = total * f lies in (0, total], so it never lands on a zero-mass entry."""
    base = 0
    if e.numel() > 8 * _CHUNK:
        full = e.numel() - e.numel() % _CHUNK
        mass = e[:full].view(-1, _CHUNK).sum(1)
        if full < e.numel():
            mass = torch.cat([mass, e[full:].sum().reshape(1)])
        cum = mass.cumsum(0)
        total = float(cum[-1])
        if not total > 0:
            raise GroundupError("cannot sample: the logits are NaN or all -inf")
        x = total * f
        c = min(int(torch.searchsorted(cum, cum.new_tensor([x])).item()), mass.numel() - 1)
        lo = float(cum[c - 1]) if c else 0.0
        f = min(max((x - lo) / float(mass[c]), 1e-7), 1.0)
        base = c * _CHUNK
        e = e[base: base + _CHUNK]
    cum = e.cumsum(0)
    if base == 0 and not float(cum[-1]) > 0:
        raise GroundupError("cannot sample: the logits are NaN or all -inf")
    i = int(torch.searchsorted(cum, cum[-1:] * f).item())
    return base + min(i, e.numel() - 1)


class _IdBuffer:
    """A growable int64 tensor of distinct token ids (the ids a penalty touches)."""

    def __init__(self, device: torch.device, ids: list[int]) -> None:
        self.n = len(ids)
        self.buf = torch.tensor(ids + [0] * max(64, self.n), dtype=torch.long, device=device)

    def append(self, token: int) -> None:
        if self.n == self.buf.numel():
            self.buf = torch.cat([self.buf, torch.empty_like(self.buf)])
        self.buf[self.n] = token
        self.n += 1

    def view(self) -> torch.Tensor:
        return self.buf[: self.n]


class SequenceSampler:
    """Per-sequence sampling state: its params, its torch.Generator (seeded ->
    same seed same output), token counts for penalties, and an optional Constraint
    (a token mask, e.g. JSON Schema) applied before everything else."""

    def __init__(self, params: SamplingParams, vocab_size: int, prompt_ids: list[int],
                 device: str | torch.device = "cpu", constraint: Constraint | None = None) -> None:
        params.validate()
        self.params = params
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        if params.seed is not None:
            self.generator.manual_seed(params.seed % (1 << 64))
        else:
            self.generator.seed()
        self.constraint = constraint
        self.plain_greedy = params.greedy and not params.has_modifiers and constraint is None
        self._k_hint = _TOPK_MIN  # first topk size tried for top-p; 0 = go to the histogram

        self._bias: tuple[torch.Tensor, torch.Tensor] | None = None
        if params.logit_bias:
            ids = sorted(params.logit_bias)
            if ids[-1] >= vocab_size:
                raise GroundupError(f"sampling parameter logit_bias has token id {ids[-1]} "
                                    f"outside the vocabulary (size {vocab_size})")
            self._bias = (torch.tensor(ids, dtype=torch.long, device=self.device),
                          torch.tensor([float(params.logit_bias[i]) for i in ids],
                                       dtype=torch.float32, device=self.device))

        # Repetition penalty: distinct ids of prompt + output.
        self._seen: set[int] | None = None
        self._seen_ids: _IdBuffer | None = None
        if params.repetition_penalty != 1.0:
            self._seen = {t for t in prompt_ids if 0 <= t < vocab_size}
            self._seen_ids = _IdBuffer(self.device, sorted(self._seen))
        # Presence / frequency: dense per-token counts of the output, and its distinct ids.
        self._counts: torch.Tensor | None = None
        self._out_ids: _IdBuffer | None = None
        self._out_seen: set[int] = set()
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            self._counts = torch.zeros(vocab_size, dtype=torch.float32, device=self.device)
            self._out_ids = _IdBuffer(self.device, [])

    # -- state ----------------------------------------------------------------------
    def accept(self, token: int) -> None:
        """Record a committed output token (updates the penalty counts, advances the constraint)."""
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token {token} outside the vocabulary (size {self.vocab_size})")
        if self.constraint is not None:
            self.constraint.advance(token)
        if self._seen is not None and token not in self._seen:
            self._seen.add(token)
            self._seen_ids.append(token)  # type: ignore[union-attr]
        if self._counts is not None:
            self._counts[token] += 1.0
            if token not in self._out_seen:
                self._out_seen.add(token)
                self._out_ids.append(token)  # type: ignore[union-attr]

    # -- the chain ------------------------------------------------------------------
    def _allowed(self, n: int, device: torch.device) -> torch.Tensor:
        """The constraint's mask as bool [n] on `device` (ids past the tokenizer's vocab: False)."""
        mask = self.constraint.allowed()  # type: ignore[union-attr]
        if mask.numel() != n:
            mask = torch.cat([mask, mask.new_zeros(max(0, n - mask.numel()))])[:n]
        return mask.to(device, non_blocking=True)

    def _masked(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits with the tokens the constraint does not allow at -inf (a new tensor)."""
        return logits.masked_fill(~self._allowed(logits.numel(), logits.device), float("-inf"))

    def _modified(self, logits: torch.Tensor) -> torch.Tensor:
        """Steps 1-3 (bias, repetition, presence/frequency) on a float32 copy."""
        p = self.params
        if not p.has_modifiers:
            return logits.float()
        lg = logits.to(torch.float32, copy=True)
        if self._bias is not None:
            lg.index_add_(0, self._bias[0], self._bias[1])
        if self._seen_ids is not None and self._seen_ids.n:
            ids, r = self._seen_ids.view(), p.repetition_penalty
            v = lg[ids]
            lg[ids] = torch.where(v > 0, v / r, v * r)
        if self._out_ids is not None and self._out_ids.n:
            ids = self._out_ids.view()
            c = self._counts[ids]  # type: ignore[index]
            lg[ids] -= c * p.frequency_penalty + p.presence_penalty
        return lg

    def _nucleus(self, s: torch.Tensor, top_p: float) -> _Cands:
        """Top-p over the whole vocab of scaled logits s, without a full sort.

        Peaked distributions: one `topk` of the remembered size covers top_p of
        the mass; the kept prefix is returned. Flat ones (nucleus > _TOPK_MAX/2):
        a probability-weighted histogram of s finds the bin where the cumulative
        mass crosses top_p and only that bin is sorted (`_threshold`); nothing
        is gathered: the whole vocab comes back with its weights, dropped = 0."""
        v = s.numel()
        if self._k_hint:
            k = min(self._k_hint, v)
            vals, idx = torch.topk(s, k)
            m = vals[0]
            e = _rel_exp(s, m)
            target = e.sum() * top_p
            pv = _rel_exp(vals, m)
            cum = pv.cumsum(0)
            if k == v or bool(cum[-1] >= target):
                n = max(1, int(((cum - pv) < target).sum().item()))
                self._k_hint = max(_TOPK_MIN, 2 * n) if 2 * n <= _TOPK_MAX else 0
                return vals[:n], idx[:n], None
        else:
            m = s.max()
            e = _rel_exp(s, m)
            target = e.sum() * top_p
        e_b = _threshold(s, e, m, target)
        w = e if e_b is None else _keep_at_least(e, e_b)
        n = int(torch.count_nonzero(w))
        self._k_hint = max(_TOPK_MIN, 2 * n) if 2 * n <= _TOPK_MAX else 0
        return s, None, w

    def _candidates(self, lg: torch.Tensor) -> _Cands:
        """Steps 5-8 on modified logits (see _Cands for what comes back)."""
        p = self.params
        v = lg.numel()
        inv_t = 1.0 / p.temperature
        idx: torch.Tensor | None = None
        w: torch.Tensor | None = None
        if 0 < p.top_k < v:
            vals, idx = torch.topk(lg, p.top_k)  # temperature is monotone: scale after
            vals = vals * inv_t if inv_t != 1.0 else vals
            if p.top_p < 1.0:
                probs = torch.softmax(vals, 0)
                n = max(1, int(((probs.cumsum(0) - probs) < p.top_p).sum().item()))
                vals, idx = vals[:n], idx[:n]
        elif p.top_p < 1.0:
            vals, idx, w = self._nucleus(lg * inv_t if inv_t != 1.0 else lg, p.top_p)
        else:
            vals = lg * inv_t if inv_t != 1.0 else lg
        if p.min_p > 0.0:
            if w is not None:  # w = exp(vals - max): the probability ratio to the top token
                _keep_at_least(w, p.min_p)
            else:
                keep = torch.nonzero(vals >= vals.max() + math.log(p.min_p)).squeeze(1)
                vals, idx = vals[keep], (keep if idx is None else idx[keep])
        return vals, idx, w

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """[V] logits -> processed [V] float32 logits: bias and penalties applied;
        unless greedy, also temperature-scaled with filtered tokens at -inf."""
        if self.constraint is not None:
            logits = self._masked(logits)
        lg = self._modified(logits)
        if self.params.greedy:
            return lg if lg is not logits else lg.clone()
        vals, idx, w = self._candidates(lg)
        if w is not None:
            return vals.masked_fill(w == 0, float("-inf"))
        if idx is None:
            return vals if vals is not logits else vals.clone()
        out = torch.full_like(lg, float("-inf"))
        out[idx] = vals
        return out

    def sample(self, logits: torch.Tensor) -> int:
        """Run the chain on [V] logits and return the next token id."""
        if self.plain_greedy:
            return int(logits.argmax().item())
        if self.constraint is not None:
            masked = self._masked(logits)
            token = self._draw(masked)
            # -inf logits keep an e^-80 floor weight in the draw (module docstring); never
            # drawn in practice, but a constraint must hold, so check and fall back to argmax
            return token if masked[token] > float("-inf") else int(masked.argmax().item())
        return self._draw(logits)

    def _draw(self, logits: torch.Tensor) -> int:
        lg = self._modified(logits)
        if self.params.greedy:
            return int(lg.argmax().item())
        vals, idx, w = self._candidates(lg)
        e = w if w is not None else _rel_exp(vals, vals.max())
        u = float(torch.rand((), generator=self.generator, device=self.device))
        i = _inverse_cdf(e, 1.0 - u)
        return i if idx is None else int(idx[i])

    def logprobs_of(self, logits: torch.Tensor, token: int, k: int
                    ) -> tuple[float, list[tuple[int, float]]]:
        """Log-softmax of the raw logits (after logit_bias, before penalties, temperature
        and any constraint mask): the chosen token's logprob and the top-k (id, logprob)."""
        lg = logits.float()
        if self._bias is not None:
            lg = lg.index_add(0, self._bias[0], self._bias[1])
        m = lg.max()
        log_z = m + torch.log(_rel_exp(lg, m).sum())
        chosen = float(lg[token] - log_z)
        if k <= 0:
            return chosen, []
        vals, ids = torch.topk(lg, min(k, lg.numel()))
        return chosen, list(zip(ids.tolist(), (vals - log_z).tolist()))


def sample_batch(samplers: list[SequenceSampler], logits: torch.Tensor) -> list[int]:
    """Sample one token per row of [B, V] logits (row i with samplers[i]).
    Plain-greedy rows (no bias or penalties) share one batched argmax."""
    if logits.dim() != 2 or logits.shape[0] != len(samplers):
        raise ValueError(f"logits {tuple(logits.shape)} do not match {len(samplers)} samplers")
    greedy_rows = [i for i, s in enumerate(samplers) if s.plain_greedy]
    if len(greedy_rows) == len(samplers):
        return logits.argmax(dim=-1).tolist()
    out = [0] * len(samplers)
    if greedy_rows:
        rows = torch.tensor(greedy_rows, device=logits.device)
        for i, t in zip(greedy_rows, logits.index_select(0, rows).argmax(dim=-1).tolist()):
            out[i] = t
    for i, s in enumerate(samplers):
        if not s.plain_greedy:
            out[i] = s.sample(logits[i])
    return out
