"""The plan of a pretraining run, settled before anything big is allocated.

- the tokenizer: the one the shards were made with (checked by sha256 against the shard
  manifest), as an engine `Tokenizer` that a checkpoint can save and `groundup chat` can load;
- the model config: `--depth N` (depth.py's one dial), explicit sizes on top of it, or a
  config.json; its vocabulary must match the tokenizer's;
- the batch geometry: tokens per optimizer step = micro_batch x seq_len x ranks x accumulation;
- the memory check: weights + gradients + optimizer state + activations of one micro-batch,
  estimated from the config and compared with the memory the device has free.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundup.config import ModelConfig
from groundup.errors import GroundupError

CPU_MICRO_TOKENS = 8192  # default tokens per forward on CPU: big enough for fast matmuls, small in memory
GPU_MICRO_TOKENS = 65536
MEMORY_HEADROOM = 0.85  # use at most this share of the free memory


# ---- tokenizer ------------------------------------------------------------------------------------
def bytes_tokenizer():
    """The engine Tokenizer equal to shards.ByteTokenizer: bytes 0-255 are ids 0-255, BOS is 256."""
    from groundup.tokenizer.gpt2_bpe import byte_to_unicode
    from groundup.tokenizer.tokenizer import CONTROL, NORMAL, Tokenizer

    printable = byte_to_unicode()
    return Tokenizer([printable[b] for b in range(256)] + ["<|bos|>"], [NORMAL] * 256 + [CONTROL],
                     model="gpt2", merges=[], pre="gpt2", bos_id=256, eos_id=256)


def engine_tokenizer(tok: Any, name: str):
    """`tok` (any tokenizer load_tokenizer returns) as an engine Tokenizer with save/token_bytes."""
    from groundup.data.shards import ByteTokenizer
    from groundup.tokenizer.tokenizer import Tokenizer

    if isinstance(tok, ByteTokenizer):
        return bytes_tokenizer()
    if isinstance(tok, Tokenizer):
        return tok
    if hasattr(tok, "gguf_metadata"):  # a groundup-trained tokenizer (tokenizer/trained.py)
        return Tokenizer.from_gguf(tok.gguf_metadata())
    raise GroundupError(f"tokenizer {name} cannot be saved with a checkpoint; use a groundup-trained, registry, "
                        "GGUF or Hugging Face tokenizer")


def shards_tokenizer_spec(shards: Path, manifest: dict[str, Any]) -> str:
    """Where the shards' tokenizer can be loaded from: the spec `groundup data run` was given, else its name."""
    try:
        run = json.loads((shards / "run.json").read_text())
        spec = run.get("identity", run).get("options", {}).get("tokenizer")
        if spec:
            return str(spec)
    except (OSError, ValueError, AttributeError):
        pass
    return str(manifest["tokenizer"]["name"])


def resolve_tokenizer(shards: Path, manifest: dict[str, Any], spec: str | None):
    """(engine tokenizer, spec) for the shards, checked against the manifest's sha256."""
    from groundup.data.shards import load_tokenizer

    spec = spec or shards_tokenizer_spec(shards, manifest)
    want = manifest["tokenizer"]
    try:
        tok, info = load_tokenizer(spec)
    except GroundupError as ex:
        raise GroundupError(f"cannot load the tokenizer of {shards} ({ex}); pass --tokenizer with the one "
                            "`groundup data run` used") from None
    if info.sha256 != want["sha256"] or info.vocab_size != want["vocab_size"]:
        raise GroundupError(f"tokenizer {spec} (vocab {info.vocab_size}, sha256 {info.sha256[:12]}) is not the one "
                            f"the shards in {shards} were made with ({want['name']}, vocab {want['vocab_size']}, "
                            f"sha256 {want['sha256'][:12]}); pass --tokenizer with the tokenizer `groundup data run` used")
    return engine_tokenizer(tok, spec), spec


# ---- model config ---------------------------------------------------------------------------------
@dataclass
class ModelPlan:
    config: ModelConfig
    matrix_lr: float
    embed_lr: float
    scalar_lr: float
    head_lr: float
    batch_tokens: int  # the depth dial's suggestion


def model_plan(vocab_size: int, seq_len: int, *, depth: int | None = None, config: str | None = None,
               layers: int | None = None, dim: int | None = None, heads: int | None = None,
               kv_heads: int | None = None, mlp_hidden: int | None = None, activation: str | None = None) -> ModelPlan:
    """The model config and the learning rates / batch size that go with it (see the module docstring)."""
    from groundup.train.depth import depth_settings

    if config is not None and any(v is not None for v in (depth, layers, dim, heads, kv_heads, mlp_hidden, activation)):
        raise GroundupError("--config sets the whole model; do not combine it with --depth/--layers/--dim/--heads")
    n_layers = layers or depth or 4
    ds = depth_settings(n_layers, vocab_size, seq_len)
    cfg = ds.config
    if config is not None:
        try:
            cfg = ModelConfig.load(config)
        except FileNotFoundError:
            raise GroundupError(f"model config {config} does not exist") from None
        except (ValueError, TypeError) as ex:
            raise GroundupError(f"{config} is not a usable model config ({ex})") from None
        if cfg.vocab_size != vocab_size:
            raise GroundupError(f"{config} has vocab_size {cfg.vocab_size} but the shards' tokenizer has "
                                f"{vocab_size} tokens; set vocab_size to {vocab_size} or use shards made with "
                                "the model's tokenizer")
        if cfg.context_length < seq_len:
            raise GroundupError(f"--seq-len {seq_len} is longer than the config's context_length "
                                f"{cfg.context_length}; lower --seq-len or raise context_length")
    elif any(v is not None for v in (dim, heads, kv_heads, mlp_hidden, activation)):
        d = dim or cfg.dim
        h = heads or max(1, d // 64)
        if d % h:
            raise GroundupError(f"--dim {d} is not a multiple of --heads {h}")
        try:
            cfg = ModelConfig(**{**cfg.to_dict(), "dim": d, "n_heads": h, "n_kv_heads": kv_heads or h,
                                 "head_dim": d // h, "mlp_hidden": mlp_hidden or 4 * d,
                                 "activation": activation or cfg.activation,
                                 "name": f"groundup-l{n_layers}-d{d}"})
        except ValueError as ex:
            raise GroundupError(f"bad model shape: {ex}") from None
    return ModelPlan(cfg, ds.matrix_lr, ds.embed_lr, ds.scalar_lr, ds.head_lr, ds.batch_tokens)


# ---- batch geometry -------------------------------------------------------------------------------
@dataclass
class BatchPlan:
    seq_len: int
    micro_batch: int  # sequences per forward, per rank
    accum: int  # micro-steps per optimizer step
    world_size: int

    @property
    def batch_tokens(self) -> int:
        return self.micro_batch * self.seq_len * self.world_size * self.accum


def batch_plan(batch_tokens: int, seq_len: int, world_size: int, micro_batch: int | None,
               micro_tokens: int) -> BatchPlan:
    """Split `batch_tokens` into micro-batches; micro_batch defaults to the largest divisor that fits `micro_tokens`."""
    per_step = seq_len * world_size
    if batch_tokens % per_step:
        raise GroundupError(f"--batch-tokens {batch_tokens} is not a multiple of seq_len x ranks = {per_step}")
    seqs = batch_tokens // per_step  # sequences per rank per optimizer step
    if micro_batch is None:
        cap = max(1, micro_tokens // seq_len)
        micro_batch = max(d for d in range(1, min(seqs, cap) + 1) if seqs % d == 0)
    if micro_batch < 1 or seqs % micro_batch:
        raise GroundupError(f"--micro-batch {micro_batch} does not divide the {seqs} sequences each rank takes per "
                            f"step (--batch-tokens {batch_tokens} / seq_len {seq_len} / {world_size} rank(s))")
    return BatchPlan(seq_len, micro_batch, seqs // micro_batch, world_size)


# ---- memory ---------------------------------------------------------------------------------------
def estimate_memory(cfg: ModelConfig, micro_tokens: int, optimizer: str, act_bytes: int,
                    shards: int = 1) -> dict[str, int]:
    """Bytes a training process needs: fp32 weights, grads, optimizer state (/ shards under FSDP), activations.

    Activations per token and layer: 24·dim + 6·mlp_hidden values at `act_bytes` each, what
    the backward pass keeps (norm inputs/outputs, q/k/v and their rotated copies, attention
    output, residuals, MLP hidden states) plus the backward's temporaries: fitted to the peak
    RSS of real steps (depth 4 x 256 and 2 x 512, fp32: the plain count 16·dim + 4·mlp_hidden
    came out 1.5x low); plus 3 float32 copies of the logits (logits, their float view, the
    gradient). Attention's T² scores are not kept (flash-style SDPA)."""
    from groundup.card import param_breakdown

    parts = param_breakdown(cfg)
    params = sum(parts.values())
    matrices = parts["attention"] + parts["mlp"] + parts["router"]
    opt_values = 2 * params if optimizer == "adamw" else matrices + 2 * (params - matrices)
    per_layer = (24 * cfg.dim + 6 * cfg.mlp_hidden) * act_bytes
    acts = micro_tokens * (cfg.n_layers * per_layer + 3 * 4 * cfg.vocab_size + 4 * cfg.dim)
    return {"weights": 4 * params // shards, "grads": 4 * params // shards, "optimizer": 4 * opt_values // shards,
            "activations": acts}


def free_memory(device) -> int:
    """Bytes free on `device` (CUDA: free device memory; CPU: available RAM)."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits(est: dict[str, int], have: int, ranks_per_device: int = 1) -> bool:
    return sum(est.values()) * ranks_per_device <= MEMORY_HEADROOM * have


def fit_micro_batch(bp: BatchPlan, cfg: ModelConfig, optimizer: str, act_bytes: int, device, shards: int = 1,
                    ranks_per_device: int = 1) -> BatchPlan:
    """`bp` with its micro-batch lowered (more accumulation, same batch) until the estimate fits memory;
    one sequence per micro-batch when nothing fits (check_memory then says what that needs)."""
    have = free_memory(device)
    seqs = bp.micro_batch * bp.accum
    micro = 1
    for m in sorted((d for d in range(1, bp.micro_batch + 1) if seqs % d == 0), reverse=True):
        if fits(estimate_memory(cfg, m * bp.seq_len, optimizer, act_bytes, shards), have, ranks_per_device):
            micro = m
            break
    return BatchPlan(bp.seq_len, micro, seqs // micro, bp.world_size)


def check_memory(cfg: ModelConfig, micro_tokens: int, optimizer: str, act_bytes: int, device,
                 shards: int = 1, ranks_per_device: int = 1) -> dict[str, int]:
    """Raise a GroundupError, before allocating anything, when the run cannot fit; return the estimate."""
    est = estimate_memory(cfg, micro_tokens, optimizer, act_bytes, shards)
    need = sum(est.values()) * ranks_per_device
    have = free_memory(device)
    if not fits(est, have, ranks_per_device):
        gib = 1 << 30
        detail = ", ".join(f"{k} {v / gib:.1f}" for k, v in est.items())
        raise GroundupError(f"this run needs about {need / gib:.1f} GiB ({detail} GiB per process, micro-batches of "
                            f"{micro_tokens:,} tokens) but "
                            f"{device.type} has {have / gib:.1f} GiB free; use a smaller model (--depth), a smaller "
                            "--micro-batch or --seq-len" + (", or FSDP (--fsdp) across devices" if shards == 1 else ""))
    return est
