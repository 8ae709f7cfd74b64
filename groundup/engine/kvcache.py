"""Preallocated key/value cache and the attention that reads it.

One tensor pair per layer, shaped [slots, kv_heads, max_len, head_dim], allocated
once. A forward step writes its keys/values at each row's positions, then
attends over the cached prefix. `slots` is either a contiguous `slice` of
rows (a view, no copy — the engine keeps batches contiguous) or a tensor of
row indices (gathered). Sliding-window layers mask keys older than the window.
"""
from __future__ import annotations

import math
import mmap

import torch
import torch.nn.functional as F

from groundup.config import ModelConfig


def _zeros(shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """Zeroed cache memory. On the CPU it is an anonymous mmap, whose pages the OS maps lazily
    (and in 4 KB pages: numpy/glibc would ask for 2 MB huge pages, and one write per sequence
    row would then make whole huge pages resident), so resident memory grows with the
    positions actually written, not with max_len x slots."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    n = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    buf = mmap.mmap(-1, max(n, 1))
    return torch.frombuffer(buf, dtype=dtype, count=math.prod(shape)).view(shape)


class KVCache:
    def __init__(self, cfg: ModelConfig, n_slots: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.n_slots, self.max_len = n_slots, max_len
        shape = (n_slots, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [_zeros(shape, dtype, device) for _ in range(cfg.n_layers)]
        self.v = [_zeros(shape, dtype, device) for _ in range(cfg.n_layers)]
        self.gqa = cfg.n_kv_heads != cfg.n_heads

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        """Move one sequence's cached prefix to another row (used to keep batches contiguous)."""
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor,
               slots, window: int | None, scale: float) -> torch.Tensor:
        """Store k, v ([B, KV, T, hd]) and return attention output [B, H, T, hd]."""
        B, _, T, _ = q.shape
        kc, vc = self.k[layer], self.v[layer]
        if isinstance(slots, slice):
            kc, vc = kc[slots], vc[slots]
        elif slots is not None:
            return self._attend_gathered(layer, q, k, v, input_pos, slots, window, scale)
        if B == 1:
            p = int(input_pos[0])
            end = p + T
            if end > self.max_len:
                raise ValueError(f"KV cache holds {self.max_len} positions; step needs {end}")
            kc[0, :, p:end] = k[0]
            vc[0, :, p:end] = v[0]
            if T == 1:
                start = 0 if window is None else max(0, end - window)
                return decode_attention(q, kc[:, :, start:end], vc[:, :, start:end], scale)
            if p == 0 and (window is None or T <= window):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=self.gqa)
            start = 0 if window is None else max(0, p - window + 1)
            mask = _mask(input_pos, T, start, end, window, q.device)
            return F.scaled_dot_product_attention(q, kc[:, :, start:end], vc[:, :, start:end], attn_mask=mask,
                                                  scale=scale, enable_gqa=self.gqa)
        return self._write_and_attend(kc, vc, q, k, v, input_pos, window, scale)

    def _write_and_attend(self, kc, vc, q, k, v, input_pos, window, scale) -> torch.Tensor:
        B, _, T, _ = q.shape
        pos = input_pos[:, None] + torch.arange(T, device=q.device)[None, :]  # [B, T]
        rows = torch.arange(B, device=q.device)[:, None]
        kc[rows, :, pos] = k.permute(0, 2, 1, 3)
        vc[rows, :, pos] = v.permute(0, 2, 1, 3)
        end = int(pos.max()) + 1
        start = 0 if window is None else max(0, int(input_pos.min()) - window + 1)
        mask = _mask(input_pos, T, start, end, window, q.device)
        if T == 1:
            return decode_attention(q, kc[:, :, start:end], vc[:, :, start:end], scale, mask)
        return F.scaled_dot_product_attention(q, kc[:, :, start:end], vc[:, :, start:end], attn_mask=mask,
                                              scale=scale, enable_gqa=self.gqa)

    def _attend_gathered(self, layer, q, k, v, input_pos, slots, window, scale) -> torch.Tensor:
        kc, vc = self.k[layer][slots], self.v[layer][slots]  # copies
        out = self._write_and_attend(kc, vc, q, k, v, input_pos, window, scale)
        self.k[layer][slots], self.v[layer][slots] = kc, vc
        return out


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """One query position per row, grouped-query attention without expanding K/V.

    q [B, H, 1, hd]; k, v [B, KV, L, hd]; mask [B, 1, 1, L] (bool) or None.
    The G = H/KV query heads that share a KV head are stacked as G rows of one
    matmul, so K and V are read once per KV head (SDPA's GQA path copies them).
    """
    B, H, _, D = q.shape
    KV = k.shape[1]
    qg = q.reshape(B, KV, H // KV, D)
    s = torch.matmul(qg, k.transpose(-1, -2)) * scale  # [B, KV, G, L]
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v).reshape(B, H, 1, D)


def _mask(input_pos: torch.Tensor, T: int, start: int, end: int, window: int | None,
          device: torch.device) -> torch.Tensor:
    """Boolean [B, 1, T, end-start]: key j visible to query i iff j <= i (and i - j < window)."""
    qpos = input_pos[:, None] + torch.arange(T, device=device)[None, :]  # [B, T]
    kpos = torch.arange(start, end, device=device)
    m = kpos[None, None, :] <= qpos[:, :, None]
    if window is not None:
        m &= (qpos[:, :, None] - kpos[None, None, :]) < window
    return m[:, None]
