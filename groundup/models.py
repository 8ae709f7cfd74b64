"""load_model: the one way anything gets a model and its tokenizer.

Accepts a registry name (`smollm2-135m-instruct`), a GGUF file, a Hugging Face
directory (config.json + *.safetensors + tokenizer.json) or a groundup
checkpoint directory (config.json + model.safetensors + tokenizer.json).
Weights are materialised straight into the chosen dtype, one tensor at a
time, and the loaded parameter count is checked against the config.
"""
from __future__ import annotations

from pathlib import Path

import torch

from groundup.config import ModelConfig
from groundup.errors import GroundupError
from groundup.model import Transformer


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16 makes bf16 matmul several times faster than fp32 on CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto", "int8", "int4"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise GroundupError(f"unknown dtype {dtype!r}; use auto, bf16, fp32, fp16, int8 or int4")
    return table[dtype]


def build_from_state(cfg: ModelConfig, items, device: torch.device, source: str,
                     int8: bool = False, dtype: torch.dtype = torch.float32, bits: int = 8) -> Transformer:
    """Create the model on the meta device and assign loaded tensors into it.

    With int8, each linear layer (and the embedding) is quantized as soon as its
    tensors are in, so peak memory stays near the int8 model plus one float tensor.
    """
    from groundup.engine.quant import quantize_module

    with torch.device("meta"):
        model = Transformer(cfg)
    expected = dict(model.named_parameters())
    pending: dict[str, set[str]] = {}
    if int8:
        for mod_name, mod in model.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)) and mod_name != "pos_emb":
                pending[mod_name] = {n for n, _ in mod.named_parameters()}
    seen: set[str] = set()
    for name, tensor in items:
        if name not in expected:
            raise GroundupError(f"{source}: tensor {name!r} has no place in the model built from its config")
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise GroundupError(f"{source}: tensor {name} has shape {tuple(tensor.shape)}, the config implies {want}")
        _assign(model, name, torch.nn.Parameter(tensor.to(device), requires_grad=False))
        seen.add(name)
        mod_name, _, attr = name.rpartition(".")
        if mod_name in pending:
            pending[mod_name].discard(attr)
            if not pending[mod_name]:
                del pending[mod_name]
                quantize_module(model, mod_name, dtype, bits)
                del tensor
                release_freed_memory(collect=False)  # keep the load's peak near the int8 size
    missing = sorted(set(expected) - seen)
    if missing:
        raise GroundupError(f"{source}: missing tensors {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if model.rope is not None:
        model.rope.to(device)
    return model.eval()


def _assign(model: torch.nn.Module, name: str, param: torch.nn.Parameter) -> None:
    mod_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(mod_name) if mod_name else model, attr, param)


def load_model(name_or_path: str | Path, dtype: str | torch.dtype | None = "auto",
               device: str | torch.device | None = "auto"):
    """Return (model, tokenizer) for a registry name, GGUF file, HF directory or checkpoint.

    dtype: auto (bf16 where fast, else fp32), bf16, fp32, fp16, or int8 (weight-only int8 linears,
    head and embedding, computing in the auto dtype).
    """
    from groundup.registry import resolve

    path = resolve(str(name_or_path))
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if path.is_file():
        from groundup.tokenizer.tokenizer import Tokenizer
        from groundup.weights.gguf import GGUFFile, iter_state_dict

        gf = GGUFFile(path)
        cfg = gf.config()
        tok = Tokenizer.from_gguf(gf.meta)
        model = build_from_state(cfg, iter_state_dict(gf, cfg, dt), dev, str(path), int8=dtype in ("int8", "int4"), dtype=dt,
                                 bits=4 if dtype == "int4" else 8)
    elif _is_groundup_ckpt(path):
        from groundup.weights.checkpoint import load_checkpoint

        model, tok = load_checkpoint(path, dt, dev)
    else:
        from groundup.weights.hf import load_hf

        model, tok = load_hf(path, dt, dev)
    if dtype in ("int8", "int4") and not any(type(m).__name__ == "Int8Linear" for m in model.modules()):
        from groundup.engine.quant import quantize_weights

        quantize_weights(model, dt, bits=4 if dtype == "int4" else 8)
    release_freed_memory()
    return model, tok


def release_freed_memory(collect: bool = True) -> None:
    """Hand memory freed during loading (float copies of quantized weights) back to the OS.

    glibc keeps freed heap chunks for reuse; without this the peak of the load
    (float32 tensors on their way to int8) stays in the process's RSS.
    """
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _is_groundup_ckpt(path: Path) -> bool:
    import json

    cfg = path / "config.json"
    if not cfg.exists():
        return False
    d = json.loads(cfg.read_text())
    return "model_type" not in d and "architectures" not in d
