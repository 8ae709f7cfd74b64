"""The one decoder-only Transformer, shared by training and serving.

Configured entirely by `ModelConfig`; the same module runs Llama-family
models (SmolLM2), GPT-2 (learned positions, LayerNorm, biases, GELU),
Gemma 3 (GeGLU, QK-norm, sandwich norms, embedding scaling, local/global
sliding-window layers with two RoPE bases) and the models groundup trains.

Parameter names are architecture-neutral (`layers.N.attn.wq.weight`, ...);
weights/ loaders map GGUF and Hugging Face names onto them. Inference uses an
optional `KVCache` (engine/kvcache.py): `forward(tokens, input_pos, cache, slots)`
writes this step's keys/values into the cache rows `slots` at positions
`input_pos` and attends over everything cached so far.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groundup.config import ModelConfig
from groundup.moe import MoE
from groundup.rope import RotaryTables, apply_rope


class Norm(nn.Module):
    """RMSNorm or LayerNorm over the last dimension, computed in float32."""

    def __init__(self, dim: int, kind: str, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if (kind == "layernorm" and bias) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x if x.dtype == torch.float32 else x.float()
        w = self.weight if self.weight.dtype == torch.float32 else self.weight.float()
        if self.kind == "rmsnorm":
            y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps) * w
        else:
            b = None if self.bias is None else self.bias.float()
            y = F.layer_norm(xf, (xf.shape[-1],), w, b, self.eps)
        return y if y.dtype == x.dtype else y.to(x.dtype)


class MLP(nn.Module):
    """Dense feed-forward block: gated (SwiGLU/GeGLU) or plain (GELU/ReLU²)."""

    def __init__(self, cfg: ModelConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or cfg.mlp_hidden
        self.activation = cfg.activation
        if cfg.gated:
            self.w_gate = nn.Linear(cfg.dim, hidden, bias=cfg.mlp_bias)
        self.w_up = nn.Linear(cfg.dim, hidden, bias=cfg.mlp_bias)
        self.w_down = nn.Linear(hidden, cfg.dim, bias=cfg.mlp_bias)
        self.w_gate_up: nn.Module | None = None  # set by engine/fuse.py: gate and up in one matmul

    def act(self, h: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            return F.silu(h)
        if self.activation in ("geglu", "gelu"):
            return F.gelu(h, approximate="tanh")
        return torch.square(F.relu(h))  # relu2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w_gate_up is not None:
            gate, up = self.w_gate_up(x).chunk(2, dim=-1)
            return self.w_down(self.act(gate) * up)
        if self.activation in ("swiglu", "geglu"):
            return self.w_down(self.act(self.w_gate(x)) * self.w_up(x))
        return self.w_down(self.act(self.w_up(x)))


class Attention(nn.Module):
    """Multi-head attention with GQA/MQA, optional QK-norm, RoPE and a sliding window."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.layer = layer
        self.window = cfg.sliding_window if cfg.is_sliding(layer) else None
        self.scale = cfg.query_scale if cfg.query_scale is not None else 1.0 / math.sqrt(self.hd)
        self.wq = nn.Linear(cfg.dim, self.n_heads * self.hd, bias=cfg.attn_bias)
        self.wk = nn.Linear(cfg.dim, self.n_kv * self.hd, bias=cfg.attn_bias)
        self.wv = nn.Linear(cfg.dim, self.n_kv * self.hd, bias=cfg.attn_bias)
        self.wo = nn.Linear(self.n_heads * self.hd, cfg.dim, bias=cfg.attn_bias)
        self.q_norm = Norm(self.hd, "rmsnorm", cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = Norm(self.hd, "rmsnorm", cfg.norm_eps) if cfg.qk_norm else None
        self.use_rope = cfg.pos_embedding == "rope"
        self.wqkv: nn.Module | None = None  # set by engine/fuse.py: one matmul instead of three

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                input_pos: torch.Tensor | None, cache=None, slots: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        H, KV = self.n_heads, self.n_kv
        if self.wqkv is not None and self.q_norm is None:
            qkv = self.wqkv(x).view(B, T, H + 2 * KV, self.hd)
            qk, v = qkv[:, :, : H + KV], qkv[:, :, H + KV:]
            if self.use_rope and rope is not None:
                qk = apply_rope(qk, rope)  # q and k rotated in one pass
            q, k = qk[:, :, :H], qk[:, :, H:]
        else:
            if self.wqkv is not None:
                q, k, v = self.wqkv(x).view(B, T, H + 2 * KV, self.hd).split([H, KV, KV], dim=2)
            else:
                q = self.wq(x).view(B, T, H, self.hd)
                k = self.wk(x).view(B, T, KV, self.hd)
                v = self.wv(x).view(B, T, KV, self.hd)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.use_rope and rope is not None:
                q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, hd]
        if cache is None:
            y = self._attend_fresh(q, k, v)
        else:
            y = cache.attend(self.layer, q, k, v, input_pos, slots, self.window, self.scale)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))

    def _attend_fresh(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention over this call's tokens only (training, scoring)."""
        T = q.shape[2]
        gqa = self.n_kv != self.n_heads
        if self.window is None or T <= self.window:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=gqa)
        i = torch.arange(T, device=q.device)
        mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=gqa)


class Block(nn.Module):
    """Pre-norm residual block; Gemma's sandwich norms when `cfg.sandwich_norm`."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        ln_bias = cfg.norm == "layernorm"
        self.attn_norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps, ln_bias)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps, ln_bias)
        self.mlp = MoE(cfg) if cfg.n_experts else MLP(cfg)
        self.post_attn_norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps) if cfg.sandwich_norm else None
        self.post_mlp_norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps) if cfg.sandwich_norm else None

    def forward(self, x, rope, input_pos, cache=None, slots=None) -> torch.Tensor:
        h = self.attn(self.attn_norm(x), rope, input_pos, cache, slots)
        if self.post_attn_norm is not None:
            h = self.post_attn_norm(h)
        x = x + h
        h = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is not None:
            h = self.post_mlp_norm(h)
        return x + h


class Transformer(nn.Module):
    """Token embedding -> blocks -> final norm -> LM head (optionally tied, soft-capped)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.dim) if cfg.pos_embedding == "learned" else None
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps, cfg.norm == "layernorm")
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.rope: RotaryTables | None = RotaryTables(cfg) if cfg.pos_embedding == "rope" else None

    # -- init (for models groundup trains) --------------------------------
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std) matrices and embeddings; residual outputs scaled by 1/sqrt(2·layers); norms = 1."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.ndim == 1:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
                continue
            s = std / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("wo.weight", "w_down.weight")) else std
            p.copy_(torch.randn(p.shape, generator=gen) * s)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(tokens)
        if self.cfg.embed_scale:
            x = x * torch.tensor(math.sqrt(self.cfg.dim), dtype=x.dtype)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        logits = F.linear(x, self.tok_emb.weight) if self.lm_head is None else self.lm_head(x)
        if self.cfg.logit_softcap:
            c = self.cfg.logit_softcap
            logits = torch.tanh(logits.float() / c) * c
        return logits

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None, cache=None,
                slots: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V] (or [B, 1, V] with last_only).

        input_pos: [B] start position of each row (default 0); cache/slots: KV cache and its rows.
        """
        x = self.hidden(tokens, input_pos, cache, slots)
        if last_only:
            x = x[:, -1:, :]
        return self.head(x)

    def hidden(self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None, cache=None,
               slots: torch.Tensor | None = None) -> torch.Tensor:
        """The last block's output [B, T, dim], before the final norm and LM head (`head(x)` gives
        logits): callers that need logits at only some positions apply the head to those alone."""
        B, T = tokens.shape
        if input_pos is None:
            input_pos = torch.zeros(B, dtype=torch.long, device=tokens.device)
        positions = input_pos[:, None] + torch.arange(T, device=tokens.device)[None, :]  # [B, T]
        if self.pos_emb is not None and not torch.compiler.is_compiling() \
                and int(positions.max()) >= self.cfg.context_length:
            raise ValueError(f"position {int(positions.max())} exceeds the context length {self.cfg.context_length}")
        x = self.embed(tokens, positions)
        ropes = self.rope.lookup(positions, x.dtype) if self.rope is not None else {}
        for blk in self.layers:
            rope = ropes.get(blk.attn.layer if self.rope is None else self.rope.key_for(blk.attn.layer))
            x = blk(x, rope, input_pos, cache, slots)
        return x
