"""`groundup generate "prompt"`: one-shot generation, streamed to stdout or returned as JSON."""
from __future__ import annotations

import json
import sys
import time

from groundup.engine.sampling import SamplingParams


def params_from_args(args, default_temperature: float) -> SamplingParams:
    p = SamplingParams(
        temperature=default_temperature if args.temperature is None else args.temperature,
        top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty, seed=args.seed,
        max_tokens=args.max_tokens, stop=list(args.stop),
    )
    p.validate()
    return p


def load_engine(args):
    from groundup.engine.engine import Engine
    from groundup.models import load_model

    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    engine = Engine(model, tok, max_batch=1)
    if getattr(args, "compile", False):
        compile_with_notice(engine)
    return engine


def compile_with_notice(engine) -> None:
    """engine/compiled.py, telling the user why start-up takes a while."""
    import sys

    from groundup.engine.compiled import compile_engine

    print("compiling the decode step (minutes the first time, seconds once cached)...", file=sys.stderr, flush=True)
    router = compile_engine(engine)
    print(f"compiled in {router.compile_s:.0f} s", file=sys.stderr)


def run_generate(args) -> None:
    from groundup.engine.engine import Request

    params = params_from_args(args, default_temperature=0.0)
    engine = load_engine(args)
    tok = engine.tokenizer
    prompt = tok.encode_chat([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    t0 = time.perf_counter()
    pieces, tokens, finish = [], 0, None
    for ev in engine.generate(Request(prompt, params)):
        tokens += 1
        pieces.append(ev.text)
        finish = ev.finish_reason or finish
        if not args.json and ev.text:
            sys.stdout.write(ev.text)
            sys.stdout.flush()
    st = engine.stats
    if args.json:
        print(json.dumps({
            "model": args.model, "prompt": args.prompt, "text": "".join(pieces), "finish_reason": finish,
            "prompt_tokens": st.prompt_tokens, "completion_tokens": tokens,
            "prefill_tokens_per_s": round(st.prompt_tokens / st.prefill_s, 1) if st.prefill_s else None,
            "decode_tokens_per_s": round((tokens - 1) / st.decode_s, 1) if st.decode_s else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
