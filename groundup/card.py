"""Model-card arithmetic: parameters, active parameters, memory, KV cache, FLOPs.

Everything is computed from a `ModelConfig`, so the same numbers come out for
a GGUF file (read from its header: metadata and tensor shapes, nothing
dequantized), a Hugging Face config.json, or a groundup checkpoint.
`print_card` prints the table of the seed's "Reading a model card" section
plus memory per dtype/quantization, KV-cache size and forward FLOPs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundup.config import ModelConfig
from groundup.errors import GroundupError
from groundup.weights.gguf import ArrayStub, GGUFFile  # noqa: F401  (ArrayStub re-exported)

# bytes per block, weights per block; GGUF block formats carry their scales inside the block
FORMATS: dict[str, tuple[int, int]] = {
    "fp32": (4, 1), "bf16": (2, 1), "fp16": (2, 1), "int8": (1, 1),
    "q8_0": (34, 32), "q6_k": (210, 256), "q5_k": (176, 256), "q4_k": (144, 256), "q4_1": (20, 32), "q4_0": (18, 32),
}
ACTIVATION_NAMES = {"swiglu": "SwiGLU", "geglu": "GeGLU", "gelu": "GELU", "relu2": "ReLU²"}
ACTIVATION_HELP = {
    "swiglu": "Swish-Gated Linear Unit (gate, up, down: 3 matrices)",
    "geglu": "GELU-Gated Linear Unit (gate, up, down: 3 matrices)",
    "gelu": "Gaussian Error Linear Unit (up, down: 2 matrices)",
    "relu2": "squared ReLU (up, down: 2 matrices)",
}


# -- parameter counts ----------------------------------------------------------
def _norm_params(cfg: ModelConfig, n: int) -> int:
    """RMSNorm has a weight per channel; LayerNorm a weight and a bias."""
    return n if cfg.norm == "rmsnorm" else 2 * n


def param_breakdown(cfg: ModelConfig, active: bool = False) -> dict[str, int]:
    """Parameter counts by part, following the ModelConfig fields exactly.

    With `active=True` an MoE layer counts only its top-k experts (the router
    always counts); every other part is used by every token.
    """
    d, hd, H, K, L = cfg.dim, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.n_layers
    assert hd is not None and K is not None
    experts = (cfg.n_experts_per_token if active else cfg.n_experts) if cfg.n_experts else 1
    parts = {
        "embedding": cfg.vocab_size * d,
        "positions": cfg.context_length * d if cfg.pos_embedding == "learned" else 0,
        "attention": L * (d * H * hd + 2 * d * K * hd + H * hd * d),  # q, k, v, o
        "attention_bias": L * (H * hd + 2 * K * hd + d) if cfg.attn_bias else 0,
        "qk_norm": L * 2 * _norm_params(cfg, hd) if cfg.qk_norm else 0,
        "norms": L * (4 if cfg.sandwich_norm else 2) * _norm_params(cfg, d),
        "mlp": L * experts * (3 if cfg.gated else 2) * d * cfg.mlp_hidden,  # gate+up+down, or up+down
        "mlp_bias": L * experts * ((2 if cfg.gated else 1) * cfg.mlp_hidden + d) if cfg.mlp_bias else 0,
        "router": L * d * cfg.n_experts if cfg.n_experts else 0,
        "final_norm": _norm_params(cfg, d),
        "lm_head": 0 if cfg.tied_embeddings else cfg.vocab_size * d,
    }
    return parts


def count_params(cfg: ModelConfig) -> int:
    """Total parameters (tied embeddings counted once)."""
    return sum(param_breakdown(cfg).values())


def active_params(cfg: ModelConfig) -> int:
    """Parameters one token uses: all of a dense model; router + top-k experts of an MoE model."""
    return sum(param_breakdown(cfg, active=True).values())


def _matrix_params(cfg: ModelConfig) -> int:
    """Parameters in 2-D weight matrices (what quantization applies to)."""
    b = param_breakdown(cfg)
    return b["embedding"] + b["positions"] + b["attention"] + b["mlp"] + b["router"] + b["lm_head"]


def weight_bytes(cfg: ModelConfig, fmt: str) -> int:
    """Bytes to hold all weights in `fmt` (see FORMATS).

    fp32/bf16/fp16 store every parameter at that width. The quantized formats
    (int8 and the GGUF block formats, whose scales live inside each block)
    apply to the 2-D weight matrices; 1-D norm weights and biases stay fp32,
    as llama.cpp stores them. int8's per-row scales are left out (< 0.1%).
    """
    key = fmt.lower()
    if key not in FORMATS:
        raise GroundupError(f"unknown weight format {fmt!r}; use one of {', '.join(FORMATS)}")
    block_bytes, block = FORMATS[key]
    total = count_params(cfg)
    if key in ("fp32", "bf16", "fp16"):
        return total * block_bytes
    matrices = _matrix_params(cfg)
    return math.ceil(matrices / block) * block_bytes + 4 * (total - matrices)


def kv_bytes_per_token(cfg: ModelConfig, dtype_bytes: int = 2) -> int:
    """Bytes one token adds to the KV cache while the context fits every window: K and V in all layers."""
    assert cfg.n_kv_heads is not None and cfg.head_dim is not None
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * dtype_bytes


def kv_bytes(cfg: ModelConfig, n_tokens: int, dtype_bytes: int = 2) -> int:
    """KV-cache bytes for one sequence of `n_tokens`; sliding-window layers keep only `window` tokens."""
    assert cfg.n_kv_heads is not None and cfg.head_dim is not None
    per_layer_token = 2 * cfg.n_kv_heads * cfg.head_dim * dtype_bytes
    total = 0
    for layer in range(cfg.n_layers):
        kept = min(n_tokens, cfg.sliding_window) if cfg.is_sliding(layer) and cfg.sliding_window else n_tokens
        total += per_layer_token * kept
    return total


def matmul_params(cfg: ModelConfig) -> int:
    """Weights one token multiplies with: active attention/MLP/router matrices and the output
    projection (vocab x dim, even when tied to the embedding); embedding lookups, norms and biases excluded."""
    b = param_breakdown(cfg, active=True)
    return b["attention"] + b["mlp"] + b["router"] + cfg.vocab_size * cfg.dim


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Forward FLOPs for one token that attends to `seq_len` positions.

    FLOPs = 2 * matmul_params(cfg)                       (one multiply-add per weight)
          + sum over layers of 2 * 2 * n_heads * head_dim * T_layer
                                                         (Q·Kᵀ scores and scores·V)
    with T_layer = min(seq_len, sliding_window) on sliding-window layers, else
    seq_len. This is Kaplan et al.'s C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn
    with both attention products counted; norms, softmax, activations and
    biases (O(dim) per token) are left out.
    """
    assert cfg.head_dim is not None
    attn = 0
    for layer in range(cfg.n_layers):
        t = min(seq_len, cfg.sliding_window) if cfg.is_sliding(layer) and cfg.sliding_window else seq_len
        attn += 2 * 2 * cfg.n_heads * cfg.head_dim * t
    return 2 * matmul_params(cfg) + attn


# -- human formatting ----------------------------------------------------------
def human_count(n: float) -> str:
    """8170848256 -> '8.17B', 134515008 -> '134.5M'."""
    for div, unit, digits in ((1e12, "T", 2), (1e9, "B", 2), (1e6, "M", 1), (1e3, "K", 1)):
        if abs(n) >= div:
            return f"{n / div:.{digits}f}{unit}"
    return str(int(n))


def human_context(n: int) -> str:
    """131072 -> '128k', 8192 -> '8k'; other numbers as they are."""
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}k"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def human_bytes(n: float) -> str:
    """Binary units: '15.2 GiB', '93.8 MiB', '30.0 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_flops(n: float) -> str:
    for div, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} FLOP"


# -- GGUF header (metadata + tensor shapes, no tensor data) ---------------------------
@dataclass
class GGUFHeader:
    path: Path
    meta: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]  # PyTorch order (outermost first)
    types: dict[str, str] = field(default_factory=dict)  # tensor name -> GGML type name
    stored_bytes: int = 0  # bytes of tensor data in the file


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Metadata and tensor shapes only (the vocabulary kept as its length): fast, no weights read."""
    gf = GGUFFile(path, long_arrays=False)
    return GGUFHeader(Path(path), gf.meta, gf.shapes(), gf.types(), gf.stored_bytes())


def _layers_note(cfg: ModelConfig) -> str:
    n_local = sum(cfg.is_sliding(i) for i in range(cfg.n_layers))
    note = f"{cfg.n_layers} Transformer blocks"
    if n_local:
        note += f" ({n_local} sliding-window, {cfg.n_layers - n_local} global)"
    return note


def _kv_note(cfg: ModelConfig) -> str:
    H, K = cfg.n_heads, cfg.n_kv_heads
    if K == H:
        return "Key-Value projection pairs; one per query head (multi-head attention)"
    if K == 1:
        return f"Key-Value projection pairs; all {H} query heads share one (multi-query attention)"
    return f"Key-Value projection pairs; {H // K} query heads share each (grouped-query attention)"


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


def _position_note(cfg: ModelConfig) -> tuple[str, str]:
    if cfg.pos_embedding == "learned":
        return "Learned", f"learned absolute position vectors ({cfg.context_length} x {cfg.dim})"
    note = f"Rotary Position Embedding, base {_num(cfg.rope_base)}"
    if cfg.rope_local_base and cfg.sliding_window:
        note += f" (sliding-window layers {_num(cfg.rope_local_base)})"
    if cfg.rope_scaling:
        note += f"; scaling {cfg.rope_scaling.get('type')} x{cfg.rope_scaling.get('factor', '?')}"
    return "RoPE", note


def card_rows(cfg: ModelConfig, header: GGUFHeader | None = None) -> list[tuple[str, str, str]]:
    """(metric, value, explanation) rows: the seed's card, then memory, KV cache and FLOPs."""
    assert cfg.head_dim is not None and cfg.n_kv_heads is not None
    total, active = count_params(cfg), active_params(cfg)
    b = param_breakdown(cfg)
    head_math = f"{cfg.n_heads}x{cfg.head_dim} = {cfg.n_heads * cfg.head_dim}"
    head_note = (f"{cfg.head_dim} dimensions per head, {cfg.dim} = {cfg.n_heads}x{cfg.head_dim}"
                 if cfg.n_heads * cfg.head_dim == cfg.dim else
                 f"{cfg.head_dim} dimensions per head; {head_math} (embedding size is {cfg.dim})")
    moe = bool(cfg.n_experts)
    pos, pos_note = _position_note(cfg)
    tied = "tied to the output layer" if cfg.tied_embeddings else "separate output layer"
    rows = [
        ("Embedding Size", str(cfg.dim), "embedding vector dimension for input tokens"),
        ("# layers", str(cfg.n_layers), _layers_note(cfg)),
        ("# attention heads", str(cfg.n_heads), f"{cfg.n_heads} heads in Attention"),
        ("Attention head size", str(cfg.head_dim), head_note),
        ("# KV heads", str(cfg.n_kv_heads), _kv_note(cfg)),
        ("MLP hidden size", str(cfg.mlp_hidden), "hidden layer size of Multi-Layer-Perceptron or FNN"),
        ("MLP activation", ACTIVATION_NAMES[cfg.activation], ACTIVATION_HELP[cfg.activation]),
        ("# experts", str(cfg.n_experts) if moe else "-", "specialized NNs in Mixture-of-Experts (MoE); - = dense MLP"),
        ("MoE TopK", str(cfg.n_experts_per_token) if moe else "-", "Number of experts activated per token in MoE"),
        ("Initialization std", "-" if header else f"{cfg.init_std:g}",
         "not recorded in GGUF files" if header else "standard deviation used for parameter initialization"),
        ("Sequence length", human_context(cfg.context_length),
         f"context window: {cfg.context_length:,} tokens the model can process at once"),
        ("Position embedding", pos, pos_note),
        ("# Parameters", human_count(total),
         f"{total:,} total parameters/weights (embedding {human_count(b['embedding'])}, {tied})"),
        ("# Active parameters", human_count(active),
         f"{active:,} used per token: router + top-{cfg.n_experts_per_token} of {cfg.n_experts} experts" if moe
         else f"{active:,} used per token (dense: all of them)"),
        ("# Training tokens", "-", "not recorded in the weights or config"),
        ("Vocabulary size", f"{cfg.vocab_size:,}", f"token embedding table {cfg.vocab_size:,} x {cfg.dim}, {tied}"),
        ("Norm", "RMSNorm" if cfg.norm == "rmsnorm" else "LayerNorm",
         f"eps {cfg.norm_eps:g}" + ("; extra post-attention/post-MLP norms" if cfg.sandwich_norm else "")
         + ("; QK-norm" if cfg.qk_norm else "") + (f"; logit softcap {cfg.logit_softcap:g}" if cfg.logit_softcap else "")),
    ]
    if cfg.sliding_window:
        n_local = sum(cfg.is_sliding(i) for i in range(cfg.n_layers))
        rows.append(("Sliding window", str(cfg.sliding_window),
                     f"local attention span of {n_local} of {cfg.n_layers} layers; the others see the whole context"))
    for fmt, (bb, block) in FORMATS.items():
        if fmt == "fp16":
            continue
        label = "bf16 / fp16" if fmt == "bf16" else fmt.upper() if fmt.startswith("q") else fmt
        if block == 1:
            how = f"{bb} byte{'s' if bb > 1 else ''} per weight" + ("; norms/biases fp32" if fmt == "int8" else "")
        else:
            how = f"{bb} bytes per {block} weights ({8 * bb / block:g} bits); norms/biases fp32"
        rows.append((f"Weights {label}", human_bytes(weight_bytes(cfg, fmt)), how))
    if header is not None:
        counts: dict[str, int] = {}
        for t in header.types.values():
            counts[t] = counts.get(t, 0) + 1
        mix = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        rows.append(("Weights as stored", human_bytes(header.stored_bytes), f"this GGUF file's tensors: {mix}"))
    per_tok = kv_bytes_per_token(cfg)
    rows.append(("KV cache / token", human_bytes(per_tok),
                 f"bf16 K and V: 2 x {cfg.n_layers} layers x {cfg.n_kv_heads} KV heads x {cfg.head_dim} x 2 bytes"))
    full = kv_bytes(cfg, cfg.context_length)
    note = f"one sequence of {cfg.context_length:,} tokens, bf16"
    if cfg.sliding_window:
        note += f"; sliding-window layers hold only {cfg.sliding_window} tokens"
    rows.append(("KV cache at full context", human_bytes(full), note))
    rows.append(("Forward FLOPs / token", human_flops(flops_per_token(cfg, 1)),
                 f"2 x {human_count(matmul_params(cfg))} matmul weights (short context)"))
    rows.append(("FLOPs / token, full context", human_flops(flops_per_token(cfg, cfg.context_length)),
                 f"+ attention 2x2 x heads x head size x {human_context(cfg.context_length)} positions per layer"))
    return rows


def load_card_config(target: str | Path) -> tuple[ModelConfig, GGUFHeader | None, str]:
    """(config, GGUF header or None, source description) for a name, GGUF, HF/checkpoint dir or config.json."""
    from groundup.registry import resolve

    path = resolve(target if isinstance(target, str) else str(target))
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json":
        try:
            return ModelConfig.load(path), None, str(path)
        except (OSError, ValueError, KeyError, TypeError) as ex:
            raise GroundupError(f"{path}: not a usable model config ({type(ex).__name__}: {ex})") from None
    header = read_gguf_header(path)
    try:
        cfg = ModelConfig.from_gguf(header.meta, header.shapes)
    except (KeyError, ValueError, TypeError) as ex:
        raise GroundupError(f"{path}: GGUF metadata does not describe a supported model ({type(ex).__name__}: {ex})") from None
    return cfg, header, str(path)


def card_dict(cfg: ModelConfig, header: GGUFHeader | None = None, source: str = "") -> dict[str, Any]:
    """Everything the card shows, as plain JSON-able numbers and rows."""
    return {
        "source": source,
        "name": cfg.name,
        "params": count_params(cfg),
        "active_params": active_params(cfg),
        "param_breakdown": param_breakdown(cfg),
        "weight_bytes": {fmt: weight_bytes(cfg, fmt) for fmt in FORMATS},
        "stored_bytes": header.stored_bytes if header else None,
        "kv_bytes_per_token": kv_bytes_per_token(cfg),
        "kv_bytes_full_context": kv_bytes(cfg, cfg.context_length),
        "flops_per_token": flops_per_token(cfg, 1),
        "flops_per_token_full_context": flops_per_token(cfg, cfg.context_length),
        "rows": [{"metric": m, "value": v, "explanation": e} for m, v, e in card_rows(cfg, header)],
        "config": cfg.to_dict(),
    }


def print_card(target: str | Path, as_json: bool = False) -> None:
    """Print the model card of a registry name, GGUF file, HF directory or config.json."""
    cfg, header, source = load_card_config(target)
    if as_json:
        print(json.dumps(card_dict(cfg, header, source), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    src = Path(source)
    table = Table(title=cfg.name or (src.parent.name if src.name == "config.json" else src.stem), caption=source)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("explanation")
    for metric, value, explanation in card_rows(cfg, header):
        table.add_row(metric, value, explanation)
    Console().print(table)
