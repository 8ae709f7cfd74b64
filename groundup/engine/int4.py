"""Weight-only int4 (group-wise, asymmetric): the smallest-traffic decode path.

Each group of 32 input weights of a row stores 4-bit codes q in 0..15 with a
float scale and minimum: w = q * scale + min. GGUF Q4_0/Q4_1 blocks are exactly
this shape, so re-encoding them loses only the rounding of scale/min to bf16.
Decode (few rows) runs PyTorch's `_weight_int4pack_mm_for_cpu` kernel (bf16
activations), which reads half the bytes of int8. Prefill dequantizes one
layer at a time (reading the kernel's own packed layout) and runs a dense GEMM. The LM head
and embedding stay int8 (engine/quant.py): a 4-bit vocabulary projection costs
too much accuracy for its share of the traffic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUP = 32
DECODE_ROWS = 64  # at or below this many rows, the int4 kernel (measured faster than dequantize + GEMM up to here)
_layout_ok: bool | None = None


def _unpack_cpu_layout(packed: torch.Tensor, N: int, K: int) -> torch.Tensor:
    """Codes [N, K] from `_convert_weight_to_int4pack_for_cpu`'s layout (read off the op: blocks
    of 32 output rows; byte [k//2, (k%2)*16 + n%16] of a block holds row n%16 low, n%16+16 high)."""
    u = packed.view(N // 32, K // 2, 2, 16)
    return torch.stack([u & 15, u >> 4], 0).permute(1, 0, 4, 2, 3).reshape(N, K)


def layout_known() -> bool:
    """Check once that the packed layout is the one `_unpack_cpu_layout` reads (else keep a copy)."""
    global _layout_ok
    if _layout_ok is None:
        q = torch.randint(0, 16, (64, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        _layout_ok = tuple(packed.shape) == (64, 32) and torch.equal(_unpack_cpu_layout(packed, 64, 64).int(), q)
    return _layout_ok


def quantize_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] float -> (codes uint8 [N, K] in 0..15, scale [N, K/32], min [N, K/32]) float32."""
    N, K = weight.shape
    w = weight.detach().float().reshape(N, K // GROUP, GROUP)
    lo, hi = w.amin(-1), w.amax(-1)
    scale = ((hi - lo) / 15.0).clamp_min(1e-10)
    q = torch.round((w - lo[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8)
    return q.reshape(N, K), scale, lo


class Int4Linear(nn.Module):
    def __init__(self, q: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor, bias: torch.Tensor | None,
                 dtype: torch.dtype) -> None:
        """q: uint8 codes [N, K] in 0..15; scale, lo: float [N, K/32]."""
        super().__init__()
        N, K = q.shape
        # tinygemm convention: w = (q - 8) * scale + zero  ->  zero = min + 8 * scale
        sz = torch.stack([scale, lo + 8 * scale], dim=-1).transpose(0, 1).contiguous()  # [K/32, N, 2]
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1))
        self.register_buffer("scales_zeros", sz.to(torch.bfloat16))
        self.nibbles = None  # plain copy for prefill only if the kernel's layout is unknown
        if not (N % 32 == 0 and layout_known()):
            self.register_buffer("nibbles", (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.in_features, self.out_features = K, N

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> "Int4Linear":
        q, scale, lo = quantize_groups(weight)
        return cls(q, scale, lo, bias, dtype)

    def codes(self) -> torch.Tensor:
        if self.nibbles is None:
            return _unpack_cpu_layout(self.packed, self.out_features, self.in_features)
        return torch.stack([self.nibbles & 15, self.nibbles >> 4], dim=-1).reshape(self.out_features, -1)

    @classmethod
    def concat(cls, parts: list["Int4Linear"]) -> "Int4Linear":
        """Stack output rows (fused projections): re-pack the concatenated codes."""
        bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
        scale, lo = zip(*(p.scale_and_min() for p in parts))
        dtype = parts[0].bias.dtype if parts[0].bias is not None else torch.float32
        return cls(torch.cat([p.codes() for p in parts]), torch.cat(scale), torch.cat(lo), bias, dtype)

    def scale_and_min(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, K/32] float32 scale and minimum, exactly as the kernel sees them (bf16-rounded)."""
        sz = self.scales_zeros.float().transpose(0, 1)  # [N, K/32, 2]
        return sz[..., 0], sz[..., 1] - 8 * sz[..., 0]

    @staticmethod
    def supports(weight: torch.Tensor) -> bool:
        return weight.ndim == 2 and weight.shape[1] % GROUP == 0 and weight.device.type == "cpu"

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        N, K = self.out_features, self.in_features
        q = self.codes().reshape(N, K // GROUP, GROUP)
        scale, lo = self.scale_and_min()
        w = q.to(torch.float32) * scale[..., None] + lo[..., None]
        return w.reshape(N, K).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.shape[0] <= DECODE_ROWS:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.packed, GROUP,
                                                          self.scales_zeros).to(x.dtype)
            if self.bias is not None:
                y = y + self.bias
        else:
            y = F.linear(x2, self.dequantized(x.dtype), self.bias)
        return y.reshape(*shape[:-1], self.out_features)
