"""Learning-rate schedules as a multiplier of each group's initial lr (applied with optimizers.set_lr).

All three start with a linear warmup: step s < warmup gives (s + 1) / warmup,
so the first step is not wasted at lr 0 and step `warmup - 1` is at full lr.
After it, with `total` the number of optimizer steps (steps 0 .. total-1):

    "cosine"    min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2,
                p = (step - warmup) / (total - warmup), from 1 down to min_ratio at step == total
    "wsd"       warmup-stable-decay: 1 until the last `cooldown` fraction of the run,
                then linear down to min_ratio at step == total (nanochat's "warmdown")
    "constant"  1

Steps past `total` keep the end value.
"""
from __future__ import annotations

import math

from groundup.errors import GroundupError

KINDS = ("cosine", "wsd", "constant")


def lr_multiplier(step: int, total: int, *, warmup: int, kind: str = "cosine", cooldown: float = 0.2,
                  min_ratio: float = 0.0) -> float:
    """The lr multiplier for optimizer step `step` (0-based) of `total`; see the module docstring."""
    if kind not in KINDS:
        raise GroundupError(f"unknown lr schedule {kind!r}; use one of {', '.join(KINDS)}")
    if total < 1:
        raise GroundupError(f"the schedule needs at least one step, got total={total}")
    if warmup < 0 or not 0.0 <= cooldown <= 1.0 or not 0.0 <= min_ratio <= 1.0:
        raise GroundupError(f"bad schedule settings warmup={warmup}, cooldown={cooldown}, min_ratio={min_ratio}: "
                            "warmup >= 0 and cooldown, min_ratio in [0, 1]")
    step = min(max(step, 0), total)
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = total - warmup
        p = 1.0 if span <= 0 else (step - warmup) / span
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    decay_steps = cooldown * total  # wsd
    decay_start = total - decay_steps
    if step < decay_start or decay_steps <= 0:
        return 1.0
    p = (step - decay_start) / decay_steps
    return 1.0 - (1.0 - min_ratio) * p
