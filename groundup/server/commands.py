"""`groundup serve`: load models, start the engine threads, run the HTTP server (uvicorn)."""
from __future__ import annotations

import argparse
import os
import sys


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server with a web chat at /")
    p.add_argument("--model", "-m", action="append", default=None,
                   help="model to serve (repeatable; registry name, GGUF, HF dir or checkpoint); "
                        "default smollm2-135m-instruct")
    p.add_argument("--dtype", default=None, choices=["auto", "bf16", "fp32", "fp16", "int8", "int4"],
                   help="weights (default: int4 on CPU — the fastest decode at every batch size measured; "
                        "auto elsewhere)")
    p.add_argument("--device", default="auto")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=None,
                   help="require this key (repeatable; also GROUNDUP_API_KEY, comma-separated)")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (max concurrent)")
    p.add_argument("--max-len", type=int, default=2048, help="tokens per sequence (prompt + output)")
    p.add_argument("--prefix-slots", type=int, default=4, help="finished conversations kept for prefix reuse")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond which 503 is answered")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="default: max-len - 1")
    p.add_argument("--max-output-tokens", type=int, default=1024)
    p.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024)
    p.add_argument("--rate-limit", type=int, default=0, help="requests per minute per key (0 = off)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a request may run")
    p.add_argument("--max-connections", type=int, default=2048,
                   help="open connections beyond which uvicorn answers 503 (a backstop; requests beyond "
                        "max-queue + max-batch in progress already get 503 at the door)")
    p.add_argument("--arena-db", default=None,
                   help="SQLite file for Arena votes (default <groundup cache>/arena.sqlite)")
    p.add_argument("--compile", action="store_true",
                   help="decode through one compiled graph per step (torch.compile; minutes the first time, cached)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from groundup.engine.constrain import compile_json_schema
    from groundup.engine.engine import Engine
    from groundup.engine.scheduler import Scheduler
    from groundup.errors import GroundupError
    from groundup.generate import compile_with_notice
    from groundup.models import load_model
    from groundup.server.app import create_app
    from groundup.server.generation import Limits, ServedModel

    if args.threads:
        torch.set_num_threads(args.threads)
    keys = list(args.api_key or [])
    keys += [k.strip() for k in os.environ.get("GROUNDUP_API_KEY", "").split(",") if k.strip()]
    if args.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        print(f"warning: serving on {args.host} without an API key: anyone who can reach this port can use it "
              f"(pass --api-key or set GROUNDUP_API_KEY)", file=sys.stderr)
    if not 1 <= args.port <= 65535:
        raise GroundupError(f"--port must be in 1..65535 (got {args.port})")
    limits = Limits(max_prompt_tokens=args.max_prompt_tokens or args.max_len - 1,
                    max_output_tokens=args.max_output_tokens, max_body_bytes=args.max_body_bytes,
                    request_timeout_s=args.timeout, rate_limit_per_min=args.rate_limit, max_queue=args.max_queue)
    if args.dtype is None:
        from groundup.models import pick_device

        args.dtype = "int4" if pick_device(args.device).type == "cpu" else "auto"
    models = {}
    for name in args.model or ["smollm2-135m-instruct"]:
        model, tok = load_model(name, dtype=args.dtype, device=args.device)
        engine = Engine(model, tok, max_batch=args.max_batch, max_len=args.max_len, prefix_slots=args.prefix_slots)
        if args.compile:
            compile_with_notice(engine)
        compile_json_schema(None, tok)  # build the vocabulary index for constrained decoding now, not mid-request
        served = os.path.basename(str(name).rstrip("/"))
        models[served] = ServedModel(served, Scheduler(engine, max_queue=args.max_queue))
        print(f"loaded {served} ({args.dtype}, {engine.max_len} tokens x {args.max_batch} sequences)", file=sys.stderr)
    app = create_app(models, limits, keys, arena_db=args.arena_db)
    print(f"groundup serve: http://{args.host}:{args.port}/  (OpenAI API at /v1)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                limit_concurrency=args.max_connections, timeout_keep_alive=5)
    for m in models.values():
        m.scheduler.close()
    return 0
