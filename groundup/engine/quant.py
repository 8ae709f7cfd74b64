"""Weight-only int8 quantization: a removable layer over the model's linear layers.

Each `nn.Linear` (and the LM head, tied or not) becomes an `Int8Linear` holding
int8 weights with one scale per output row (symmetric, absmax/127): a quarter
of fp32's memory. Two paths, chosen per call by the number of rows:
- decode (few rows): PyTorch's `_weight_int8pack_mm` CPU kernel, activations
  in bf16 (the kernel's fast path), output back in the compute dtype;
- prefill (many rows): dequantize this layer's weights to the compute dtype
  and run a dense GEMM — compute-bound work gets the full-precision BLAS rate.
On GPUs both paths dequantize on the fly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DECODE_ROWS = 16  # at or below this many rows, use the int8 kernel
HEAD_REFINE = 64  # LM head: recompute this many top logits per row exactly (see Int8Linear.refine)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (int8 weights, float32 scales)."""
    w = weight.detach()
    scale = (w.abs().amax(dim=1).float() / 127.0).clamp_min(1e-12)
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    for i in range(0, w.shape[0], 4096):  # in row chunks: no full-size float temporaries
        q[i:i + 4096] = torch.round(w[i:i + 4096].float() / scale[i:i + 4096, None]).clamp_(-127, 127)
    return q, scale


class Int8Linear(nn.Module):
    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        # The kernel path returns bf16 (8 bits of mantissa: logits near 25 move in steps of 0.125),
        # which can tie or swap the top tokens. For the LM head, `refine` top logits per row are
        # recomputed in full precision from the int8 rows: exact argmax, top-p and top logprobs.
        self.refine = 0

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> "Int8Linear":
        q, s = quantize_rows(weight)
        return cls(q, s, bias, dtype)

    @classmethod
    def concat(cls, parts: list["Int8Linear"]) -> "Int8Linear":
        """Stack the output rows of several layers (for fused projections)."""
        bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
        return cls(torch.cat([p.qweight for p in parts]), torch.cat([p.scales.float() for p in parts]), bias,
                   parts[0].scales.dtype)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.shape[0] <= DECODE_ROWS and x2.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16), self.qweight, self.scales_bf16).to(x.dtype)
            if self.refine:
                y = self._refine_top(x2, y)
            if self.bias is not None:
                y = y + self.bias
        else:
            y = F.linear(x2, self.dequantized(x.dtype), self.bias)
        return y.reshape(*shape[:-1], self.out_features)


    def _refine_top(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = y.topk(min(self.refine, y.shape[-1]), dim=-1).indices  # [M, k]
        rows = self.qweight[idx].to(torch.float32) * self.scales[idx].float().unsqueeze(-1)  # [M, k, K]
        exact = torch.einsum("mkd,md->mk", rows, x.float())
        return y.scatter_(1, idx, exact.to(y.dtype))


class Int8Embedding(nn.Module):
    """Embedding lookup from int8 rows (shares its buffers with a tied Int8Linear LM head)."""

    def __init__(self, table: Int8Linear) -> None:
        super().__init__()
        self.table = table

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.table
        return t.qweight[tokens].to(t.scales.dtype) * t.scales[tokens].unsqueeze(-1)


@torch.no_grad()
def quantize_module(model: nn.Module, name: str, dtype: torch.dtype, bits: int = 8) -> None:
    """Quantize one linear layer (or the token embedding) of `model` in place.

    bits=4 puts the block's linear layers in int4 (engine/int4.py); the LM head and
    the embedding are always int8.
    """
    from groundup.engine.int4 import Int4Linear

    mod = model.get_submodule(name)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(mod, nn.Linear):
        if bits == 4 and name != "lm_head" and Int4Linear.supports(mod.weight):
            setattr(parent, attr, Int4Linear.from_float(mod.weight, mod.bias, dtype))
        else:
            setattr(parent, attr, Int8Linear.from_float(mod.weight, mod.bias, dtype))
            if name == "lm_head":
                model.lm_head.refine = HEAD_REFINE
    elif isinstance(mod, nn.Embedding):
        table = Int8Linear.from_float(mod.weight, None, dtype)
        if getattr(model, "lm_head", None) is None:  # tied: the head shares the int8 table
            model.lm_head = table
            table.refine = HEAD_REFINE
        model.tok_emb = Int8Embedding(table)


@torch.no_grad()
def quantize_weights(model: nn.Module, dtype: torch.dtype | None = None, bits: int = 8) -> nn.Module:
    """Replace every linear layer, the LM head and the token embedding with int8 (or int4) versions."""
    dtype = dtype or model.tok_emb.weight.dtype
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding)) and n != "pos_emb"]
    names.sort(key=lambda n: n == "tok_emb")  # the embedding last: it may become the tied head
    for n in names:
        quantize_module(model, n, dtype, bits)
    return model
