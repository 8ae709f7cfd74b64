"""GGUF dequantization: gguf's numpy `dequantize` vs groundup's torch `dequantize_tensor`.

`python -m bench.dequant [--reps N] [FILE.gguf ...]` decodes every tensor of
each file both ways (default: the pulled SmolLM2-135M Q4_1 and Gemma-3-270M
Q4_K_M files) and prints, per file and per tensor type, the seconds each path
takes and their ratio. Both get the same input, the array `GGUFReader` would
give as `tensor.data` (rows of block bytes; float32/float16 for F32/F16), here
cut from groundup's own mmap header parser because GGUFReader itself takes
8-30 s to open these files. Each output is dropped before the next tensor, as
a streaming loader does. The file's pages are touched first so neither path
pays the first read of the mmap; each path then makes `--reps` passes,
alternating, and the fastest pass counts, which keeps the ratio meaningful on
a busy machine.
"""
from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

DEFAULT_MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def _default_paths() -> list[Path]:
    from groundup.registry import cached_path

    paths = [cached_path(name) for name in DEFAULT_MODELS]
    return [p for p in paths if p is not None]


def _reader_like(raw: np.ndarray, qtype: str, shape: tuple[int, ...], type_size: int, block: int) -> np.ndarray:
    """The flat tensor bytes shaped as GGUFReader's `tensor.data`."""
    if qtype == "F32":
        return raw.view(np.float32).reshape(shape)
    if qtype == "F16":
        return raw.view(np.float16).reshape(shape)
    return raw.reshape(*shape[:-1], shape[-1] // block * type_size)


def _run(tensors: list[tuple[str, np.ndarray, tuple[int, ...]]], decode: Callable[..., Any]) -> dict[str, float]:
    """Seconds per tensor type for one pass over the tensors."""
    secs: dict[str, float] = defaultdict(float)
    for qtype, data, shape in tensors:
        t0 = time.perf_counter()
        out = decode(data, qtype, shape)
        secs[qtype] += time.perf_counter() - t0
        del out
    return secs


def bench_file(path: Path, reps: int) -> tuple[float, float]:
    from gguf import GGMLQuantizationType
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    from groundup.weights.dequant import SUPPORTED, dequantize_tensor
    from groundup.weights.gguf import GGUFFile

    gf = GGUFFile(path, long_arrays=False)
    tensors = []
    for t in gf.tensors.values():
        raw = gf.raw(t.name)
        int(raw[::4096].sum())  # touch every page of the mmap once
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[t.qtype]]
        tensors.append((t.qtype, _reader_like(raw, t.qtype, t.shape, size, block), t.shape))

    def ref(data: np.ndarray, qtype: str, shape: tuple[int, ...]) -> Any:
        return dequantize(data, GGMLQuantizationType[qtype])

    best_ref: dict[str, float] = {}
    best_ours: dict[str, float] = {}
    for _ in range(reps):
        for fn, best in ((ref, best_ref), (dequantize_tensor, best_ours)):
            run = _run(tensors, fn)
            if not best or sum(run.values()) < sum(best.values()):
                best.clear()
                best.update(run)

    counts: dict[str, int] = defaultdict(int)
    elems: dict[str, int] = defaultdict(int)
    for qtype, _, shape in tensors:
        counts[qtype] += 1
        elems[qtype] += math.prod(shape)
    print(f"\n{path.name}  ({len(tensors)} tensors, {sum(elems.values()) / 1e6:.1f}M params)")
    print(f"  {'type':6s} {'tensors':>7s} {'Mparams':>8s} {'numpy s':>9s} {'torch s':>9s} {'ratio':>7s}")
    for name in sorted(counts, key=lambda k: -elems[k]):
        r, o = best_ref[name], best_ours[name]
        tag = "" if name in SUPPORTED else "  (fallback)"
        print(f"  {name:6s} {counts[name]:7d} {elems[name] / 1e6:8.1f} {r:9.3f} {o:9.3f} {r / o:6.1f}x{tag}")
    total_ref, total_ours = sum(best_ref.values()), sum(best_ours.values())
    print(f"  {'total':6s} {len(tensors):7d} {sum(elems.values()) / 1e6:8.1f} "
          f"{total_ref:9.3f} {total_ours:9.3f} {total_ref / total_ours:6.1f}x")
    return total_ref, total_ours


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="GGUF files (default: the pulled reference models)")
    ap.add_argument("--reps", type=int, default=3, help="alternating runs per path; the fastest counts")
    args = ap.parse_args(argv)
    paths = args.files or _default_paths()
    if not paths:
        raise SystemExit("no GGUF files: pass paths or `groundup pull smollm2-135m-instruct gemma3-270m`")
    from groundup.weights import dequant

    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"decode threads {dequant.THREADS}, huge pages {dequant.USE_HUGEPAGES}; best of {args.reps}")
    grand_ref = grand_ours = 0.0
    for p in paths:
        r, o = bench_file(p, args.reps)
        grand_ref += r
        grand_ours += o
    print(f"\nall files: numpy {grand_ref:.3f} s, torch {grand_ours:.3f} s, ratio {grand_ref / grand_ours:.1f}x")


if __name__ == "__main__":
    main()
