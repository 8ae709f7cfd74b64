"""SamplingParams: the knobs of one request's sampling (OpenAI fields plus top_k / min_p / seed).

`validate()` turns a bad value into a one-line GroundupError naming the field.
The chain that applies them is in engine/sampling.py (which re-exports this class).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from groundup.errors import GroundupError

MAX_LOGPROBS = 20  # same cap as OpenAI's top_logprobs


def _is_num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class SamplingParams:
    """Per-request sampling settings (OpenAI fields plus top_k, min_p, seed)."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # CTRL-style, on tokens seen in prompt + output
    presence_penalty: float = 0.0  # OpenAI-style, on generated tokens
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # top logprobs per token (0 = only the chosen token's)

    def validate(self) -> None:
        """Raise GroundupError with a one-line message naming the first bad field."""

        def bad(name: str, rule: str, value: object) -> GroundupError:
            return GroundupError(f"sampling parameter {name} {rule} (got {value!r})")

        for name in ("temperature", "top_p", "min_p", "repetition_penalty",
                     "presence_penalty", "frequency_penalty"):
            if not _is_num(getattr(self, name)):
                raise bad(name, "must be a finite number", getattr(self, name))
        if self.temperature < 0:
            raise bad("temperature", "must be >= 0", self.temperature)
        if not _is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "must be an integer >= 0 (0 = off)", self.top_k)
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]", self.top_p)
        if not 0 <= self.min_p <= 1:
            raise bad("min_p", "must be in [0, 1]", self.min_p)
        if self.repetition_penalty <= 0:
            raise bad("repetition_penalty", "must be > 0 (1 = off)", self.repetition_penalty)
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise bad(name, "must be in [-2, 2]", getattr(self, name))
        if self.logit_bias is not None and not isinstance(self.logit_bias, dict):
            raise bad("logit_bias", "must be a dict of token id -> bias", self.logit_bias)
        for tok, b in (self.logit_bias or {}).items():
            if not _is_int(tok) or tok < 0:
                raise bad("logit_bias", "keys must be token ids >= 0", tok)
            if not _is_num(b) or not -100 <= b <= 100:
                raise bad("logit_bias", f"value for token {tok} must be in [-100, 100]", b)
        if self.seed is not None and not _is_int(self.seed):
            raise bad("seed", "must be an integer or None", self.seed)
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise bad("max_tokens", "must be an integer >= 1", self.max_tokens)
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "must be a list of non-empty strings", self.stop)
        ids = self.stop_token_ids
        if not isinstance(ids, list) or not all(_is_int(t) and t >= 0 for t in ids):
            raise bad("stop_token_ids", "must be a list of token ids >= 0", ids)
        lp = self.logprobs
        if lp is not None and (not _is_int(lp) or not 0 <= lp <= MAX_LOGPROBS):
            raise bad("logprobs", f"must be an integer in [0, {MAX_LOGPROBS}] or None", lp)

    @property
    def greedy(self) -> bool:
        """True when the draw is an argmax (temperature 0, or top_k 1)."""
        return self.temperature == 0 or self.top_k == 1

    @property
    def has_modifiers(self) -> bool:
        """True when logit_bias or any penalty changes the logits."""
        return bool(self.logit_bias or self.repetition_penalty != 1.0
                    or self.presence_penalty or self.frequency_penalty)
