"""Weight-only int8 quantization: a removable layer over the model's linear layers.

Each `nn.Linear` (and the LM head, tied or not) becomes an `Int8Linear` holding
int8 weights with one scale per output row (symmetric, absmax/127).
Activations stay in the compute dtype; on CPU the matmul runs through
PyTorch's `_weight_int8pack_mm` kernel, elsewhere through dequantize-on-the-fly.
Halves weight memory traffic versus bf16, which is what bounds batch-1 decode.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Int8Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scale.to(dtype))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), self.qweight, self.scales.to(x2.dtype))
        else:
            y = F.linear(x2, self.qweight.to(x2.dtype)) * self.scales.to(x2.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def quantize_int8(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every linear layer (and the LM head) with Int8Linear, in place."""
    dtype = dtype or model.tok_emb.weight.dtype
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.Linear):
                setattr(mod, child_name, Int8Linear(child.weight, child.bias, dtype))
    if getattr(model, "lm_head", None) is None:
        model.lm_head = Int8Linear(model.tok_emb.weight, None, dtype)
    return model
