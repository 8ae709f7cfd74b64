"""Training FLOPs per token, the machine's measured matmul peak, and the fast dtype: the MFU denominator.

MFU = flops_per_token(cfg, seq_len) * tokens_per_second / matmul_peak(dtype, device).

`flops_per_token` counts training FLOPs the way PaLM (Chowdhery et al. 2022,
appendix B) and nanochat's `estimate_flops` do:

    6 · N  +  12 · Σ_layers n_heads · head_dim · T_layer

N is the weights a token multiplies with: attention q/k/v/o, MLP (the active
experts of an MoE layer, and its router) and the output projection
(vocab · dim, counted even when tied to the embedding); embedding lookups,
norms and biases are left out. 6 = 2 (multiply-add) × 3 (forward + backward
for activations and weights). The attention term is Q·Kᵀ and scores·V over the
full T = seq_len (T_layer = min(T, window) on sliding-window layers), without
halving for the causal mask, as PaLM and nanochat count it. It equals
3 × card.flops_per_token(cfg, seq_len), the model card's forward count.

`matmul_peak` times a few large square matmuls (best of several) once per
device, dtype and thread count, and caches the FLOP/s in
<cache>/peak.json (<cache> = $GROUNDUP_CACHE, else ~/.cache/groundup).
A CPU measurement taken while the machine is overloaded (1-minute load average above the
number of CPUs: other work competing for the cores) is used for this run but not cached, so
a later, quieter run measures again; `refresh=True` re-measures regardless.
`fast_dtype` picks bfloat16 only where it is measurably faster: on an AVX2-only
CPU (this machine) bf16 matmuls run >10x slower than fp32, while CUDA GPUs and
AMX CPUs are several times faster in bf16.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from groundup.config import ModelConfig

FAST_RATIO = 1.3  # bf16 must beat fp32 by this factor to be used
TARGET_SECONDS = 0.05  # grow the matrix until one matmul takes about this long
REPEATS = 5


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token at sequence length `seq_len`; see the module docstring."""
    from groundup.card import flops_per_token as forward_flops_per_token

    return 3.0 * float(forward_flops_per_token(cfg, seq_len))


def peak_cache_path() -> Path:
    from groundup.registry import cache_dir

    return cache_dir() / "peak.json"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def peak_key(dtype: torch.dtype, device: torch.device | str = "cpu") -> str:
    """Cache key: what the measured number depends on (device model, CPU threads, dtype)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = f"cuda:{torch.cuda.get_device_name(dev)}"
        if dtype == torch.float32:  # TF32 tensor cores change the fp32 number
            name += f"|tf32={torch.backends.cuda.matmul.allow_tf32}"
    elif dev.type == "cpu":
        name = f"cpu:{_cpu_name()}|threads={torch.get_num_threads()}"
    else:
        name = dev.type
    return f"{name}|{str(dtype).removeprefix('torch.')}"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[float, int]:
    """Measure now: (best FLOP/s, matrix size n). Grows n from 256 until one n×n matmul takes
    ~TARGET_SECONDS (or n reaches 2048 on CPU / 8192 on GPU), then keeps the best of REPEATS."""
    dev = torch.device(device)
    n_max = 8192 if dev.type == "cuda" else 2048
    gen = torch.Generator(device="cpu").manual_seed(0)

    def operands(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
        b = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
        return a, b

    def timed(a: torch.Tensor, b: torch.Tensor) -> float:
        _sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(dev)
        return time.perf_counter() - t0

    n = 256
    while True:
        a, b = operands(n)
        timed(a, b)  # warm-up (kernel selection, page faults)
        if n >= n_max or timed(a, b) >= TARGET_SECONDS:
            break
        n *= 2
    best = min(timed(a, b) for _ in range(REPEATS))
    return 2.0 * n ** 3 / best, n


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".peak.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def machine_overloaded() -> bool:
    """True when the 1-minute load average exceeds the number of CPUs (more runnable work than cores)."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1)
    except (OSError, AttributeError):  # no load average on this platform
        return False


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", *, refresh: bool = False) -> float:
    """The machine's matmul FLOP/s in `dtype` on `device`: measured on first use, then read from peak.json."""
    path = peak_cache_path()
    key = peak_key(dtype, device)
    cache = _read_cache(path)
    entry = cache.get(key)
    if not refresh and isinstance(entry, dict) and float(entry.get("flops", 0)) > 0:
        return float(entry["flops"])
    contended = torch.device(device).type == "cpu" and machine_overloaded()
    flops, n = measure_matmul_peak(dtype, device)
    if contended:
        return flops  # contended cores read low: use it for this run, don't keep it
    cache = _read_cache(path)  # re-read: another process may have added keys meanwhile
    cache[key] = {"flops": flops, "n": n, "torch": torch.__version__,
                  "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        _write_cache(path, cache)
    except OSError:
        pass  # a read-only cache costs a re-measurement next time, never the run
    return flops


def fast_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """bfloat16 if its measured matmul peak is >= FAST_RATIO × float32's on `device`, else float32."""
    bf16 = matmul_peak(torch.bfloat16, device)
    fp32 = matmul_peak(torch.float32, device)
    return torch.bfloat16 if bf16 >= FAST_RATIO * fp32 else torch.float32
