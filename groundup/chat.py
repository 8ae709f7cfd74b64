"""`groundup chat`: an interactive, streaming, multi-turn chat in the terminal.

Uses the model's own chat template. Commands: /reset, /system TEXT, /save FILE,
/help, /quit. Ctrl-C stops the answer being written (the partial answer is
kept in the history); Ctrl-D or /quit leaves.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from groundup.errors import GroundupError

HELP = "commands: /reset  /system TEXT  /save FILE  /help  /quit   (Ctrl-C stops an answer, Ctrl-D quits)"


def save_transcript(messages: list[dict], path: str) -> Path:
    """Write the conversation as JSON, atomically."""
    p = Path(path).expanduser()
    tmp = p.with_name(p.name + ".partial")
    tmp.write_text(json.dumps({"messages": messages}, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, p)
    return p


def run_chat(args) -> None:
    from groundup.engine.engine import Request
    from groundup.generate import load_engine, params_from_args

    params = params_from_args(args, default_temperature=0.2)
    if args.top_p == 1.0:
        params.top_p = 0.9
    engine = load_engine(args)
    tok = engine.tokenizer
    system = args.system
    messages: list[dict] = []
    interactive = sys.stdin.isatty()
    print(f"groundup chat — {args.model}. {HELP}", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            print("\n(use /quit or Ctrl-D to leave)", file=sys.stderr)
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, rest = line.partition(" ")
            if cmd in ("/quit", "/exit"):
                break
            if cmd == "/reset":
                messages.clear()
                print("(conversation cleared)", file=sys.stderr)
            elif cmd == "/system":
                system = rest.strip() or None
                print(f"(system prompt {'set' if system else 'cleared'})", file=sys.stderr)
            elif cmd == "/save":
                if not rest.strip():
                    print("usage: /save FILE", file=sys.stderr)
                    continue
                full = ([{"role": "system", "content": system}] if system else []) + messages
                print(f"(saved to {save_transcript(full, rest.strip())})", file=sys.stderr)
            else:
                print(HELP, file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        convo = ([{"role": "system", "content": system}] if system else []) + messages
        try:
            ids = tok.encode_chat(convo)
        except GroundupError as e:
            print(f"error: {e}", file=sys.stderr)
            messages.pop()
            continue
        answer: list[str] = []
        try:
            for ev in engine.generate(Request(ids, params)):
                answer.append(ev.text)
                sys.stdout.write(ev.text)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        except GroundupError as e:
            print(f"error: {e}", file=sys.stderr)
            messages.pop()
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(answer)})
