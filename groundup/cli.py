"""The `groundup` command line: parse arguments, call the module that does the work, print.

Each subcommand is a thin wrapper; the work lives in the module named after
the concept (registry.py for pull/models, card.py for card, chat.py for chat,
engine/ for generation). A `GroundupError` becomes one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from groundup.errors import GroundupError

DEFAULT_MODEL = "smollm2-135m-instruct"

# Stages that register their own subcommands: each module has `add_commands(sub)`,
# which adds parsers with `set_defaults(func=...)`. These modules import only the
# standard library at the top, so `groundup --help` stays fast.
COMMAND_MODULES = ["groundup.server.commands", "groundup.tokenizer.commands", "groundup.data.commands",
                   "groundup.eval.commands", "groundup.train.commands"]


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                   help=f"registry name, GGUF file, HF directory or groundup checkpoint (default {DEFAULT_MODEL})")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32", "fp16", "int8", "int4"],
                   help="compute dtype (auto = bf16 where the CPU/GPU has fast bf16, else fp32); "
                        "int8 / int4 = weight-only quantized linears (CPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (auto = cuda when present)")
    p.add_argument("--compile", action="store_true",
                   help="decode through one compiled graph per step (torch.compile; minutes the first time, cached)")


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: 0.7 for chat, 0 for generate)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="groundup", description="An LLM system built from the ground up.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pull", help="fetch a model into the cache (~/.cache/groundup)")
    p.add_argument("names", nargs="+", help="registry names (see `groundup models --known`)")

    p = sub.add_parser("models", help="list cached models")
    p.add_argument("--known", action="store_true", help="list registry names that can be pulled")

    p = sub.add_parser("card", help="print the model-card table for a model or config")
    p.add_argument("target", help="registry name, GGUF file, HF directory/config.json, or groundup checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("chat", help="interactive chat with streaming output")
    _add_model(p)
    _add_sampling(p)
    p.add_argument("--system", default=None, help="system prompt")

    p = sub.add_parser("generate", help="one-shot generation from a prompt")
    p.add_argument("prompt")
    _add_model(p)
    _add_sampling(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object with text, tokens, timings")

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "func", None) is not None:
            result = args.func(args)
            return int(result or 0)
        if args.command == "pull":
            from groundup.registry import pull
            for name in args.names:
                path = pull(name)
                print(f"{name}: {path}")
        elif args.command == "models":
            from groundup.registry import print_models
            print_models(known=args.known)
        elif args.command == "card":
            from groundup.card import print_card
            print_card(args.target, as_json=args.json)
        elif args.command == "chat":
            from groundup.chat import run_chat
            run_chat(args)
        elif args.command == "generate":
            from groundup.generate import run_generate
            run_generate(args)
    except GroundupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `groundup generate ... | head` closed the pipe
        try:
            sys.stdout = open("/dev/null", "w")
        except OSError:
            pass
        return 141
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
