"""Rotary position embeddings (RoPE): frequency tables, scaling, and the rotation.

Rotation uses the "half" (GPT-NeoX / Hugging Face) layout: the first and second
halves of each head are the two coordinates of each rotated pair. GGUF Llama
files store Q/K permuted for the interleaved layout; weights/gguf.py undoes
that permutation so one rotation serves every model. Gemma 3 uses a second
table (a smaller base) on its sliding-window layers.
"""
from __future__ import annotations

import math

import torch

from groundup.config import ModelConfig


def inv_frequencies(head_dim: int, base: float, scaling: dict | None) -> torch.Tensor:
    """1/base^(2i/d) for i < d/2, with linear or Llama-3 style frequency scaling applied."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim))
    if not scaling:
        return inv
    kind, factor = scaling.get("type"), float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv / factor
    if kind == "llama3":
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        smooth = ((old / wavelen) - low) / (high - low)
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        mid = (wavelen <= old / low) & (wavelen >= old / high)
        return torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    raise ValueError(f"unsupported RoPE scaling type {kind!r}; groundup supports linear and llama3")


class RotaryTables:
    """cos/sin tables for each distinct RoPE base in a model (one, or two for Gemma 3)."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str = "cpu") -> None:
        self.head_dim = cfg.head_dim
        self.length = cfg.context_length
        self._keys = [self._key(cfg, i) for i in range(cfg.n_layers)]
        self.tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        for key in set(self._keys):
            base, scaled = key
            inv = inv_frequencies(cfg.head_dim, base, cfg.rope_scaling if scaled else None)
            t = torch.arange(self.length, dtype=torch.float64, device="cpu")
            ang = torch.outer(t, inv)
            self.tables[key] = (ang.cos().float().to(device), ang.sin().float().to(device))

    @staticmethod
    def _key(cfg: ModelConfig, layer: int) -> tuple:
        local = cfg.is_sliding(layer) and cfg.rope_local_base is not None
        return (cfg.rope_base_for(layer), not local)

    def key_for(self, layer: int) -> tuple:
        return self._keys[layer]

    def to(self, device: torch.device | str) -> "RotaryTables":
        self.tables = {k: (c.to(device), s.to(device)) for k, (c, s) in self.tables.items()}
        return self

    def lookup(self, positions: torch.Tensor, dtype: torch.dtype) -> dict[tuple, tuple[torch.Tensor, torch.Tensor]]:
        """positions [B, T] -> {key: (cos, sin)} each [B, T, 1, head_dim/2] (float32)."""
        if not torch.compiler.is_compiling() and positions.numel() and int(positions.max()) >= self.length:
            raise ValueError(f"position {int(positions.max())} is beyond the context length {self.length}")
        out = {}
        for key, (cos, sin) in self.tables.items():
            if cos.device != positions.device:
                cos, sin = cos.to(positions.device), sin.to(positions.device)
                self.tables[key] = (cos, sin)
            out[key] = (cos[positions].unsqueeze(2), sin[positions].unsqueeze(2))
        return out


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate x [B, T, H, hd] by the (cos, sin) pair, computing in float32."""
    cos, sin = rope
    half = x.shape[-1] // 2
    xf = x if x.dtype == torch.float32 else x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out if out.dtype == x.dtype else out.to(x.dtype)
