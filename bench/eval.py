"""Eval-harness speed: items/s on a multiple-choice task, share of time in the model, and the gain from
batching choices with a shared context versus one forward pass per choice.

Both sides score the same requests with the same model in one run (alternating,
best of `--rounds`), and must agree on every log-likelihood:
- batched: eval/local_backend.py (contexts once, continuations batched over the shared prefix);
- separate: one forward pass over context + continuation for each choice, the LM head applied only
  at the continuation's positions (what a harness without batching does).

    python -m bench.eval [--task arc_easy] [--limit 1000] [--compare-limit 200] [--model smollm2-135m-instruct]

The full harness run (items/s, share of time in the model) covers `--limit` items; the
batched-vs-separate ratio is taken on the first `--compare-limit` of them.
"""
from __future__ import annotations

import argparse
import time


def separate(backend, reqs) -> list[float]:
    import torch

    out = []
    with torch.inference_mode():
        for r in reqs:
            ctx, cont = backend.encode_pair(r.context, r.continuation)
            ids = (ctx + cont)[-backend.max_len:]
            h = backend.model.hidden(torch.tensor([ids]))[0]
            lp, _ = backend._logprobs(h[len(ids) - len(cont) - 1:-1], cont)
            out.append(float(lp.sum()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="arc_easy")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--compare-limit", type=int, default=200,
                    help="items for the batched-vs-separate comparison (separate scoring is slow)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    from groundup.eval.harness import evaluate
    from groundup.eval.local_backend import LocalBackend
    from groundup.eval.task import TaskConfig
    from groundup.eval.tasks import get_task
    from groundup.models import load_model

    torch.set_num_threads(a.threads)
    model, tok = load_model(a.model, dtype=a.dtype)
    backend = LocalBackend(model, tok, identity=f"bench-{a.model}-{a.dtype}")
    task = get_task(a.task)
    docs = task.docs()[:a.limit]
    cfg = TaskConfig()
    n_cmp = min(a.compare_limit, len(docs))
    reqs = [r for d in docs[:n_cmp] for r in task.requests(d, cfg)]
    best: dict[str, float] = {}
    for i in range(a.rounds):  # alternate the two, best of rounds: load on a shared machine hits both
        print(f"round {i + 1}/{a.rounds}: scoring {n_cmp} items both ways ...", flush=True)
        t = time.perf_counter()
        batched = [lp for lp, _ in backend.loglikelihood(reqs)]
        best["batched"] = min(best.get("batched", 1e9), time.perf_counter() - t)
        t = time.perf_counter()
        single = separate(backend, reqs)
        best["separate"] = min(best.get("separate", 1e9), time.perf_counter() - t)
    worst = max(abs(x - y) for x, y in zip(batched, single))
    print(f"full harness run on {len(docs)} items ...", flush=True)
    t = time.perf_counter()
    res = evaluate(backend, [a.task], cfg, a.limit, cache=None, show_progress=False)
    wall = time.perf_counter() - t
    metrics = res["tasks"][task.name]["metrics"]
    print(f"{a.task}: {n_cmp} items, {len(reqs)} requests, {a.model} {a.dtype}, {a.threads} threads")
    print("| scoring | seconds | items/s | × separate |\n|---|---:|---:|---:|")
    for k in ("separate", "batched"):
        print(f"| {k} | {best[k]:.1f} | {n_cmp / best[k]:.1f} | {best['separate'] / best[k]:.2f} |")
    print(f"max |Δ log-likelihood| between the two: {worst:.2e}")
    print(f"full harness run: {wall:.1f} s, {len(docs) / wall:.1f} items/s, {100 * res['model_share']:.0f}% of the "
          f"time in the model; acc {metrics['acc']['value']:.4f}, acc_norm {metrics['acc_norm']['value']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
