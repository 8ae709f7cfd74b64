"""Mixture-of-Experts feed-forward: a router picks the top-k experts per token.

Router logits -> top-k -> softmax over the chosen k (Mixtral convention) ->
weighted sum of the chosen experts' MLP outputs. Experts are ordinary `MLP`s,
so dense and MoE models share the expert code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groundup.config import ModelConfig


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from groundup.model import MLP  # local import: model.py imports this module

        self.k = cfg.n_experts_per_token
        self.router = nn.Linear(cfg.dim, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(cfg) for _ in range(cfg.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, chosen = torch.topk(self.router(x).float(), self.k, dim=-1)  # [N, k]
        weights = F.softmax(weights, dim=-1).to(x.dtype)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(x[rows]) * weights[rows, slot, None])
        return out.reshape(shape)
