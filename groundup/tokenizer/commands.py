"""`groundup tokenizer ...`: train a byte-level BPE tokenizer, encode, decode, show, compare, export.

Only the standard library is imported here; each handler imports what it needs, so that
`groundup --help` stays fast. The work lives in bpe.py (training), trained.py (the tokenizer)
and compare.py (bytes per token against GPT-2 and SmolLM2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TOKENIZER_HELP = "a saved groundup tokenizer (.json from `groundup tokenizer train`), or gpt2 / smollm2"


def add_commands(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer; encode, decode, show, compare")
    tsub = top.add_subparsers(dest="tokenizer_command", required=True)

    p = tsub.add_parser("train", help="train byte-level BPE on text files")
    p.add_argument("files", nargs="+", help="UTF-8 text files")
    p.add_argument("--vocab-size", type=int, default=8192, help="tokens in all, special ones included (default 8192)")
    p.add_argument("--pattern", default="gpt4", help="pre-split regex: gpt4 (default), gpt2, or a regex of your own")
    p.add_argument("--special", action="append", default=None, metavar="TOKEN",
                   help="a special token (repeatable; replaces the default set: <|bos|>, chat roles, tool calls)")
    p.add_argument("--max-chars", type=int, default=None, help="read at most this many characters")
    p.add_argument("--workers", type=int, default=None, help="counting processes (default: CPU count)")
    p.add_argument("--out", "-o", default=None, help="where to save (default: bpe-<vocab size>.json)")
    p.add_argument("--hf-dir", default=None, help="also write a Hugging Face tokenizer.json into this directory")
    p.set_defaults(func=_train)

    p = tsub.add_parser("encode", help="print the token ids of a text")
    p.add_argument("text", nargs="?", default=None, help="the text (default: read stdin)")
    p.add_argument("--tokenizer", "-t", required=True, help=TOKENIZER_HELP)
    p.add_argument("--allow-special", action="store_true", help="turn special-token text into special ids")
    p.set_defaults(func=_encode)

    p = tsub.add_parser("decode", help="print the text of token ids")
    p.add_argument("ids", nargs="+", help="token ids (spaces or commas between them)")
    p.add_argument("--tokenizer", "-t", required=True, help=TOKENIZER_HELP)
    p.set_defaults(func=_decode)

    p = tsub.add_parser("show", help="show token boundaries in colour, with the ids below")
    p.add_argument("text")
    p.add_argument("--tokenizer", "-t", required=True, help=TOKENIZER_HELP)
    p.set_defaults(func=_show)

    p = tsub.add_parser("compare", help="bytes per token on a text file: yours vs GPT-2 and SmolLM2")
    p.add_argument("file", help="held-out UTF-8 text (not part of the training data)")
    p.add_argument("--tokenizer", "-t", action="append", default=[], help=TOKENIZER_HELP + " (repeatable)")
    p.add_argument("--gpt2-files", default=None, help="directory with GPT-2's gpt2_vocab.json "
                                                      "(default: shared/data/bpe-reference)")
    p.set_defaults(func=_compare)

    p = tsub.add_parser("export", help="write a trained tokenizer as Hugging Face tokenizer.json")
    p.add_argument("--tokenizer", "-t", required=True, help="a saved groundup tokenizer (.json)")
    p.add_argument("--hf-dir", required=True, help="directory for tokenizer.json + tokenizer_config.json")
    p.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    from groundup.tokenizer import bpe

    specials = args.special if args.special is not None else bpe.DEFAULT_SPECIALS
    tok = bpe.train_files(args.files, args.vocab_size, pattern=args.pattern, special_tokens=specials,
                          max_chars=args.max_chars, workers=args.workers)
    out = Path(args.out or f"bpe-{tok.vocab_size}.json")
    tok.name = out.stem
    tok.save(out)
    s = tok.train_stats
    print(f"trained {tok.vocab_size:,} tokens ({len(tok.special_tokens)} special, 256 bytes, {len(tok.merges):,} merges) "
          f"on {s.chars:,} characters ({s.chunks:,} chunks, {s.distinct_chunks:,} distinct)")
    print(f"time: {s.count_seconds + s.merge_seconds:.2f} s = split+count {s.count_seconds:.2f} s "
          f"+ merge loop ({s.merge_loop}) {s.merge_seconds:.2f} s")
    if s.merge_loop != "C":
        from groundup.tokenizer import bpe_native

        print(f"note: the C merge loop was not used ({bpe_native.why_not()}); the Python one learns the same merges")
    print(f"saved {out}")
    if args.hf_dir:
        print(f"saved {tok.save_hf(args.hf_dir) / 'tokenizer.json'}")
    return 0


def _load(spec: str):
    from groundup.tokenizer.compare import resolve

    return resolve(spec)


def _encode(args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else sys.stdin.read()
    enc = _load(args.tokenizer)
    if args.allow_special:
        tok = getattr(enc, "tok", None)
        if tok is None:
            from groundup.errors import GroundupError

            raise GroundupError("--allow-special needs a groundup or SmolLM2 tokenizer, not gpt2")
        ids = tok.encode(text, add_bos=False, allow_special=True)
    else:
        ids = enc.encode(text)
    print(" ".join(map(str, ids)))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from groundup.errors import GroundupError

    try:
        ids = [int(x) for arg in args.ids for x in arg.replace(",", " ").split()]
    except ValueError:
        raise GroundupError(f"token ids must be integers, got {' '.join(args.ids)!r}") from None
    enc = _load(args.tokenizer)
    for i in ids:
        if not 0 <= i < enc.vocab_size:
            raise GroundupError(f"token id {i} is outside the vocabulary of {enc.vocab_size} tokens")
    sys.stdout.write(b"".join(enc.token_bytes(i) for i in ids).decode("utf-8", errors="replace") + "\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    enc = _load(args.tokenizer)
    ids = enc.encode(args.text)
    colours = ["on dark_green", "on dark_blue", "on dark_red", "on dark_magenta", "on dark_cyan", "on grey30"]
    shown, pending, k = Text(), b"", 0
    for i in ids:
        pending += enc.token_bytes(i)
        try:  # a token that ends inside a UTF-8 character is shown together with the next one
            piece = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        shown.append(piece.replace("\n", "\\n\n"), style=colours[k % len(colours)])
        pending, k = b"", k + 1
    if pending:
        shown.append(pending.decode("utf-8", errors="replace"), style=colours[k % len(colours)])
    n_bytes = len(args.text.encode("utf-8"))
    console = Console(highlight=False)
    console.print(shown)
    console.print(" ".join(map(str, ids)), style="dim")
    console.print(f"{enc.name}: {len(ids)} tokens, {n_bytes} bytes, "
                  f"{n_bytes / max(len(ids), 1):.2f} bytes/token", style="dim")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from groundup.errors import GroundupError
    from groundup.tokenizer.compare import compare

    path = Path(args.file)
    try:
        with open(path, encoding="utf-8", newline="") as f:  # the bytes as they are (\r\n included)
            text = f.read()
    except FileNotFoundError:
        raise GroundupError(f"{path} does not exist") from None
    except UnicodeDecodeError as e:
        raise GroundupError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = compare(text, args.tokenizer, gpt2_files=args.gpt2_files)
    table = Table(title=f"{path.name}: {len(text.encode('utf-8')):,} bytes")
    for col, justify in (("tokenizer", "left"), ("vocab", "right"), ("tokens", "right"),
                         ("bytes/token", "right"), ("note", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r.name, f"{r.vocab_size:,}" if r.vocab_size else "-", f"{r.tokens:,}" if r.tokens else "-",
                      f"{r.bytes_per_token:.3f}" if r.bytes_per_token else "-", r.note)
    Console(highlight=False).print(table)
    return 0


def _export(args: argparse.Namespace) -> int:
    from groundup.tokenizer.trained import TrainedTokenizer

    tok = TrainedTokenizer.load(args.tokenizer)
    print(f"saved {tok.save_hf(args.hf_dir) / 'tokenizer.json'}")
    return 0
