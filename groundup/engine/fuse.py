"""Projection fusion for inference: Q/K/V in one matmul, gate/up in one matmul.

A removable layer: `fuse_projections(model)` concatenates the weights and sets
`Attention.wqkv` / `MLP.w_gate_up`, which model.py uses when present. Fewer,
larger matmuls mean fewer kernel launches per token at batch 1 (where Python
and dispatch overhead is a large share of decode time) and better cache use.
Training never calls this, so parameter names stay the same there.
"""
from __future__ import annotations

import torch
from torch import nn

from groundup.engine.int4 import Int4Linear
from groundup.engine.quant import Int8Linear
from groundup.model import MLP, Attention


def _cat_linear(parts: list[nn.Module]) -> nn.Module:
    if isinstance(parts[0], (Int8Linear, Int4Linear)):
        return type(parts[0]).concat(parts)
    w = torch.cat([p.weight.detach() for p in parts], dim=0)
    has_bias = parts[0].bias is not None
    lin = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device="meta")
    lin.weight = nn.Parameter(w, requires_grad=False)
    if has_bias:
        lin.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
    return lin


@torch.no_grad()
def fuse_projections(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, Attention) and mod.wqkv is None:
            mod.wqkv = _cat_linear([mod.wq, mod.wk, mod.wv])
            del mod.wq, mod.wk, mod.wv
        elif isinstance(mod, MLP) and mod.w_gate_up is None and hasattr(mod, "w_gate"):
            mod.w_gate_up = _cat_linear([mod.w_gate, mod.w_up])
            del mod.w_gate, mod.w_up
    from groundup.models import release_freed_memory

    release_freed_memory()  # the unfused copies were freed; hand the pages back
    return model
