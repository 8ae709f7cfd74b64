"""Which parameter gets which optimizer and learning rate (nanochat's split), and setting the lr each step.

`build_optimizers(model, kind="muon")` returns two optimizers:

    AdamW  "embed"   tok_emb / pos_emb weights           lr = embed_lr  * s   (weight decay)
           "head"    lm_head weight; with tied embeddings    lr = head_lr   * s   (weight decay)
                     the shared tok_emb weight (it is the head too: at embed_lr it diverges)
           "scalar"  norms, biases, any 0-/1-D tensor    lr = scalar_lr * s   (no weight decay)
    Muon   "matrix"  2-D weights inside the blocks       lr = matrix_lr       (weight decay)
                     (q/k/v/o, MLP, MoE experts and router)

with s = (dim / 768) ** -0.5, as nanochat scales its AdamW learning rates: the
defaults were tuned at width 768, and an embedding row's or head column's
useful step shrinks like 1/sqrt(width) as the model gets wider. Muon's lr
needs no width correction (its update has unit spectral scale by
construction). AdamW uses betas=(0.8, 0.95) and eps=1e-10 (nanochat's values).

`kind="adamw"` gives one AdamW holding the same groups, the "matrix" group
included, at lr = matrix_lr (not width-scaled). matrix_lr=0.02 is a Muon
value: pass something like 3e-3 for AdamW matrices.

Every param group carries "name" (embed/head/scalar/matrix) and
"initial_lr"; `set_lr(optimizers, m)` sets lr = initial_lr * m for all of
them, which is how the schedule (schedule.py) is applied.

Parameter names are matched after stripping the wrappers' prefixes
(DDP's `module.`, torch.compile's `_orig_mod.`), so the model may be passed
wrapped or not. FSDP2 keeps parameter names, so it needs no stripping.
"""
from __future__ import annotations

import torch
from torch import nn

from groundup.errors import GroundupError
from groundup.train.muon import Muon

ADAM_EPS = 1e-10
REFERENCE_WIDTH = 768  # the width nanochat's AdamW learning rates were tuned at
_WRAPPER_PARTS = {"module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}


def clean_name(name: str) -> str:
    """Parameter name without wrapper prefixes: 'module._orig_mod.layers.0.wq.weight' -> 'layers.0.wq.weight'."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def param_role(name: str, p: torch.Tensor) -> str:
    """'embed', 'head', 'scalar' or 'matrix' for a parameter of a groundup Transformer."""
    name = clean_name(name)
    if name.startswith(("tok_emb.", "pos_emb.")):
        return "embed"
    if name.startswith("lm_head."):
        return "head"
    if p.ndim < 2:
        return "scalar"
    if p.ndim == 2 and name.startswith("layers."):
        return "matrix"
    raise GroundupError(f"no optimizer rule for parameter {name!r} of shape {tuple(p.shape)}; "
                        "build_optimizers knows groundup Transformer parameters only")


def _unwrap_cfg(model: nn.Module):
    m = model
    while not hasattr(m, "cfg") and hasattr(m, "module"):
        m = m.module
    m = getattr(m, "_orig_mod", m)
    if not hasattr(m, "cfg"):
        raise GroundupError("build_optimizers needs a groundup Transformer (a module with .cfg), optionally wrapped")
    return m.cfg


def build_optimizers(model: nn.Module, *, kind: str = "muon", matrix_lr: float = 0.02, embed_lr: float = 0.2,
                     scalar_lr: float = 0.04, head_lr: float = 0.004, weight_decay: float = 0.0,
                     betas: tuple[float, float] = (0.8, 0.95)) -> list[torch.optim.Optimizer]:
    """AdamW (+ Muon when kind="muon") over `model`'s trainable parameters; see the module docstring."""
    if kind not in ("muon", "adamw"):
        raise GroundupError(f"unknown optimizer kind {kind!r}; use muon or adamw")
    cfg = _unwrap_cfg(model)
    s = (int(cfg.dim) / REFERENCE_WIDTH) ** -0.5
    tied = bool(getattr(cfg, "tied_embeddings", False))
    by_role: dict[str, list[torch.Tensor]] = {"embed": [], "head": [], "scalar": [], "matrix": []}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        role = param_role(name, p)
        if tied and role == "embed" and clean_name(name).startswith("tok_emb."):
            role = "head"  # the tied table is also the output layer: it takes the head's (small) lr
        by_role[role].append(p)

    def group(role: str, lr: float, wd: float) -> dict:
        return {"params": by_role[role], "lr": lr, "initial_lr": lr, "weight_decay": wd, "name": role}

    adam_groups = [g for g in (group("embed", embed_lr * s, weight_decay), group("head", head_lr * s, weight_decay),
                               group("scalar", scalar_lr * s, 0.0)) if g["params"]]
    if kind == "adamw":
        if by_role["matrix"]:
            adam_groups.append(group("matrix", matrix_lr, weight_decay))
        return [torch.optim.AdamW(adam_groups, betas=betas, eps=ADAM_EPS)]
    opts: list[torch.optim.Optimizer] = []
    if adam_groups:
        opts.append(torch.optim.AdamW(adam_groups, betas=betas, eps=ADAM_EPS))
    if by_role["matrix"]:
        opts.append(Muon([group("matrix", matrix_lr, weight_decay)], lr=matrix_lr, weight_decay=weight_decay))
    return opts


def set_lr(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    """lr = initial_lr * multiplier in every param group of every optimizer."""
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * multiplier
