"""Muon: momentum SGD whose update is orthogonalised by a Newton–Schulz iteration.

For a 2-D weight W with gradient G, one step is

    buf    = momentum * buf + (1 - momentum) * G          (an EMA of gradients)
    U      = G + momentum * (buf - G)   if nesterov else buf
    O      = NewtonSchulz5(U)           ≈ the orthogonal factor of U (U = A S Bᵀ -> A Bᵀ)
    W     -= lr * max(1, rows / cols) ** 0.5 * O           (+ decoupled weight decay)

NewtonSchulz5 is the quintic iteration of Keller Jordan's Muon write-up
(kellerjordan.github.io/posts/muon): normalise U by its Frobenius norm, then
`ns_steps` times X <- a·X + (b·A + c·A²)·X with A = X·Xᵀ and
(a, b, c) = (3.4445, -4.7750, 2.0315). Those coefficients trade exactness for
speed: after 5 steps the singular values sit roughly in [0.7, 1.2] rather than
exactly at 1, which trains just as well. The iteration runs in bfloat16 on CUDA
and on CPUs with native bf16 matmuls (AMX / AVX512-BF16), and in float32
elsewhere (on an AVX2-only CPU bf16 matmuls are >10x slower than fp32).

Muon is for the hidden 2-D weight matrices only; embeddings, the LM head,
norms, biases and scalars belong to AdamW (see optimizers.py), and Muon raises
a clear error if given anything that is not 2-D.

Distributed: under DDP every rank holds the same averaged gradient after the
backward all-reduce, so every rank computes the same update with no extra
communication. Under FSDP2 (`fully_shard`) parameters, gradients and the
momentum buffer are DTensors sharded by rows; the momentum arithmetic runs on
the local shard, then the update is all-gathered (`full_tensor()`),
orthogonalised redundantly on every rank (Newton–Schulz needs the whole
matrix) and sliced back to this rank's shard without further communication.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def default_ns_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where bf16 matmuls are fast (CUDA, AMX or AVX512-BF16 CPUs), else float32."""
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        fast = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() or \
            getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return torch.bfloat16 if fast else torch.float32
    return torch.float32


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximate the orthogonal factor of the 2-D matrix `g` with the quintic Newton–Schulz iteration.

    Returns a tensor of `g`'s shape and dtype whose singular values are all close to 1
    (roughly 0.7–1.2 with the default 5 steps)."""
    if g.ndim != 2:
        raise ValueError(f"orthogonalize takes a 2-D matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFS
    x = g.to(dtype or default_ns_dtype(g.device))
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide orientation: X·Xᵀ is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm() + 1e-7)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    if tall:
        x = x.mT
    return x.to(g.dtype)


def _is_dtensor(t: torch.Tensor) -> bool:
    """Whether `t` is a DTensor; without importing torch.distributed.tensor (seconds) when nothing has."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def _orthogonalize_any(u: torch.Tensor, steps: int, dtype: torch.dtype | None) -> torch.Tensor:
    """orthogonalize() for plain tensors and for FSDP2's row-sharded DTensors (gather, compute, re-slice)."""
    if not _is_dtensor(u):
        return orthogonalize(u, steps, dtype)
    from torch.distributed.tensor import distribute_tensor

    full = orthogonalize(u.full_tensor(), steps, dtype)
    # src_data_rank=None: every rank already holds the same `full`, so each keeps its slice, no communication
    return distribute_tensor(full, u.device_mesh, u.placements, src_data_rank=None)


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton–Schulz, for 2-D weight matrices (see the module docstring).

    lr is in units of "spectral norm change per step": 0.02 is the usual value.
    weight_decay is decoupled (W -= lr·wd·W before the update). `ns_dtype`
    overrides the Newton–Schulz precision (default: `default_ns_dtype(param.device)`).
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 0.02,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, weight_decay: float = 0.0,
                 *, ns_dtype: torch.dtype | None = None) -> None:
        if lr < 0:
            raise ValueError(f"Muon lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Muon momentum must be in [0, 1), got {momentum}")
        if ns_steps < 1:
            raise ValueError(f"Muon ns_steps must be >= 1, got {ns_steps}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype  # kept out of param_groups so they stay plain numbers (JSON-able state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:  # checked before the group is added, so a refused group leaves no trace
            if p.ndim != 2:
                raise ValueError(
                    f"Muon only updates 2-D weight matrices, got a parameter of shape {tuple(p.shape)}; "
                    "give embeddings, norms, biases and scalars to AdamW (build_optimizers does this)")
        super().add_param_group({**param_group, "params": params})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.lerp_(g, 1.0 - mom)
                u = g.lerp(buf, mom) if group["nesterov"] else buf
                o = _orthogonalize_any(u, group["ns_steps"], self.ns_dtype)
                rows, cols = p.shape
                scale = max(1.0, rows / cols) ** 0.5
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(o.to(p.dtype), alpha=-lr * scale)
        return loss
