"""Engine benchmark: groundup vs llama.cpp (llama-cpp-python), same GGUF, same threads, one run.

Prints decode tok/s at batch 1, prefill tok/s on a 512-token prompt, and peak
RSS, each as a ratio to llama.cpp. Each side runs in its own subprocess so
peak RSS is its own; the two alternate (llama.cpp, groundup, llama.cpp, ...)
and the best of the rounds is kept, so background noise hits both alike.

    python -m bench.engine [--model smollm2-135m-instruct] [--rounds 2] [--variants bf16,int8]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
PROMPT_TOKENS = 512
DECODE_TOKENS = 128
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def prompt_text() -> str:
    f = SHARED / "tinyshakespeare" / "input.txt"
    if f.exists():
        return f.read_text()[:8000]
    base = "The quick brown fox jumps over the lazy dog while the committee debates the budget. "
    return base * 120


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_llama(path: str, max_len: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=max_len, n_threads=THREADS, n_threads_batch=THREADS,
                          n_batch=PROMPT_TOKENS, verbose=False)
    ids = llm.tokenize(prompt_text().encode(), add_bos=False, special=False)[:PROMPT_TOKENS]
    llm.eval(ids[:8])  # warm-up
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prefill = len(ids) / (time.perf_counter() - t)
    llm.reset()
    llm.eval(ids[:16])
    n, t = 0, time.perf_counter()
    for tok in llm.generate([], top_k=1, temp=0.0, reset=False):
        n += 1
        if n >= DECODE_TOKENS:
            break
    decode = n / (time.perf_counter() - t)
    return {"prefill": prefill, "decode": decode, "rss_mb": peak_rss_mb()}


def run_groundup(path: str, max_len: int, variant: str) -> dict:
    import torch

    from groundup.engine.engine import Engine, Request
    from groundup.engine.sampling import SamplingParams
    from groundup.models import load_model

    torch.set_num_threads(THREADS)
    dtype = next((d for d in ("int8", "int4", "fp32") if d in variant), "bf16")
    model, tok = load_model(path, dtype=dtype)
    engine = Engine(model, tok, max_batch=1, max_len=max_len)
    if "compile" in variant:
        from groundup.engine.compiled import compile_engine

        compile_engine(engine)
    ids = tok.encode(prompt_text(), add_bos=False)[:PROMPT_TOKENS]
    greedy = SamplingParams(temperature=0.0, max_tokens=DECODE_TOKENS, ignore_eos=True)
    for _ in range(2):  # warm-up (and compilation, when compiled)
        list(engine.generate(Request(ids[:PROMPT_TOKENS], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))))
    engine.stats.__init__()
    list(engine.generate(Request(ids, SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True))))
    prefill = engine.stats.prompt_tokens / engine.stats.prefill_s
    engine.stats.__init__()
    list(engine.generate(Request(ids[:16], greedy)))
    decode = (engine.stats.generated_tokens - 1) / engine.stats.decode_s
    return {"prefill": prefill, "decode": decode, "rss_mb": peak_rss_mb()}


def child(kind: str, path: str, max_len: int, variant: str) -> dict:
    cmd = [sys.executable, "-m", "bench.engine", "--child", kind, "--path", path, "--max-len", str(max_len),
           "--variant", variant]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise SystemExit(f"{kind} benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="bf16,int8")
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--json", default=None, help="also write results to this file")
    ap.add_argument("--child", default=None)
    ap.add_argument("--path", default=None)
    ap.add_argument("--variant", default="bf16")
    a = ap.parse_args()
    if a.child:
        fn = run_llama(a.path, a.max_len) if a.child == "llama" else run_groundup(a.path, a.max_len, a.variant)
        print(json.dumps(fn))
        return
    from groundup.registry import resolve

    path = str(resolve(a.model))
    variants = [v for v in a.variants.split(",") if v]
    best: dict[str, dict] = {}
    for r in range(a.rounds):
        for kind in ["llama"] + variants:
            res = child("llama" if kind == "llama" else "groundup", path, a.max_len, kind)
            print(f"round {r + 1} {kind:>14}: decode {res['decode']:7.1f} tok/s  prefill {res['prefill']:8.1f} tok/s  "
                  f"peak RSS {res['rss_mb']:6.0f} MB", file=sys.stderr)
            b = best.setdefault(kind, res)
            b["decode"], b["prefill"] = max(b["decode"], res["decode"]), max(b["prefill"], res["prefill"])
            b["rss_mb"] = min(b["rss_mb"], res["rss_mb"])
    ref = best["llama"]
    print(f"\n{Path(path).name}, {THREADS} threads, prompt {PROMPT_TOKENS} tokens, decode {DECODE_TOKENS} tokens, "
          f"best of {a.rounds} rounds")
    print(f"| engine | decode tok/s | × llama.cpp | prefill tok/s | × llama.cpp | peak RSS MB | × llama.cpp |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, res in best.items():
        print(f"| {'llama.cpp' if kind == 'llama' else 'groundup ' + kind} | {res['decode']:.1f} | "
              f"{res['decode'] / ref['decode']:.2f} | {res['prefill']:.0f} | {res['prefill'] / ref['prefill']:.2f} | "
              f"{res['rss_mb']:.0f} | {res['rss_mb'] / ref['rss_mb']:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(best, indent=2))


if __name__ == "__main__":
    main()
