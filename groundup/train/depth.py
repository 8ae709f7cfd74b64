"""The one dial: `--depth N` derives the whole model and its training settings (nanochat's recipe).

    dim          = ceil(depth * aspect / head_dim) * head_dim     (aspect 64: depth 4 -> 256 wide)
    n_heads      = dim / head_dim   (n_kv_heads = n_heads: plain multi-head attention)
    mlp_hidden   = 4 * dim, activation ReLU² (nanochat's; 2 matrices, no gate)
    positions    RoPE (base 10,000); context_length = seq_len
    norms        RMSNorm, pre-norm, plus QK-norm on queries and keys. nanochat's RMSNorm has no
                 weight; ModelConfig's always has one (initialised to 1, trained by AdamW), a
                 superset that starts out identical
    head         untied from the embedding; logits soft-capped at 15 (tanh), as nanochat does
    biases       none

Learning rates are nanochat's base values, constant in depth: Muon matrix_lr 0.02,
AdamW embed_lr 0.2, head_lr 0.004, scalar_lr 0.04. The width dependence is applied
by `build_optimizers`, which multiplies the AdamW rates by (dim / 768) ** -0.5; pass
these values to it unchanged.

Batch size grows with the model: with N the block parameters (12 · n_layers · dim²
for this shape: 4·dim² attention + 8·dim² MLP per layer),

    batch_tokens = 524,288 · (N / N_d20) ** (2/3), rounded to a power of two in log
                   space, then to a multiple of seq_len (at least one sequence)

anchored at nanochat's depth-20 model (dim 1280, N_d20 = 393M, 524,288 tokens per
step). The exponent 2/3 follows the compute-optimal batch-size law B ∝ C^0.33
(DeepSeek LLM, 2024) with C ∝ N² for a Chinchilla-sized run (D = 20 N). This gives
depth 1/2/4/8/12 -> 1k/4k/16k/64k/256k tokens: small enough that a 2-core CPU still
takes hundreds of steps in minutes, nanochat's value at depth 20.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from groundup.config import ModelConfig
from groundup.errors import GroundupError

MATRIX_LR, EMBED_LR, SCALAR_LR, HEAD_LR = 0.02, 0.2, 0.04, 0.004
ANCHOR_BATCH_TOKENS = 524_288  # nanochat's total batch at depth 20
ANCHOR_BLOCK_PARAMS = 12 * 20 * 1280 ** 2  # nanochat d20: 20 layers, width 1280
LOGIT_SOFTCAP = 15.0


@dataclass
class DepthSettings:
    """A model config and the training settings the depth dial derives for it."""

    config: ModelConfig
    matrix_lr: float
    embed_lr: float
    scalar_lr: float
    head_lr: float
    batch_tokens: int  # tokens per optimizer step (all ranks, all accumulation micro-steps)
    seq_len: int


def block_params(cfg: ModelConfig) -> int:
    """Parameters in the blocks' weight matrices (attention q/k/v/o + MLP), the N of the batch-size law."""
    assert cfg.head_dim is not None and cfg.n_kv_heads is not None
    attn = cfg.dim * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    mlp = (3 if cfg.gated else 2) * cfg.dim * cfg.mlp_hidden
    return cfg.n_layers * (attn + mlp)


def batch_tokens_for(n_block_params: int, seq_len: int) -> int:
    """The batch-size law of the module docstring."""
    raw = ANCHOR_BATCH_TOKENS * (n_block_params / ANCHOR_BLOCK_PARAMS) ** (2 / 3)
    tokens = 2 ** round(math.log2(max(raw, 1.0)))
    return max(seq_len, round(tokens / seq_len) * seq_len)


def depth_settings(depth: int, vocab_size: int, seq_len: int, *, aspect: int = 64, head_dim: int = 64) -> DepthSettings:
    """Model config, learning rates and batch size for a model `depth` blocks deep (see the module docstring)."""
    for name, v in (("depth", depth), ("vocab_size", vocab_size), ("seq_len", seq_len), ("aspect", aspect),
                    ("head_dim", head_dim)):
        if v < 1:
            raise GroundupError(f"{name} must be a positive integer, got {v}")
    dim = math.ceil(depth * aspect / head_dim) * head_dim
    cfg = ModelConfig(
        vocab_size=vocab_size, dim=dim, n_layers=depth, n_heads=dim // head_dim, n_kv_heads=dim // head_dim,
        head_dim=head_dim, mlp_hidden=4 * dim, activation="relu2", context_length=seq_len, pos_embedding="rope",
        rope_base=10000.0, norm="rmsnorm", norm_eps=1e-5, tied_embeddings=False, qk_norm=True,
        logit_softcap=LOGIT_SOFTCAP, attn_bias=False, mlp_bias=False, arch="groundup", name=f"groundup-d{depth}",
    )
    return DepthSettings(config=cfg, matrix_lr=MATRIX_LR, embed_lr=EMBED_LR, scalar_lr=SCALAR_LR, head_lr=HEAD_LR,
                         batch_tokens=batch_tokens_for(block_params(cfg), seq_len), seq_len=seq_len)
