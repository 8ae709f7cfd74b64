"""BPE training benchmark: groundup's trainer vs Hugging Face `tokenizers` (BpeTrainer), one run.

Both train on the same ~16 MB of text (shared/data: TinyStories, the Gutenberg / British novels,
WikiText raw, the LLaMA-Factory wiki and C4 demos, tiny Shakespeare; read in place) with the same
GPT-4 pre-split pattern, the same special tokens and vocabulary size 8,192, with two worker threads
or processes each. The two alternate (groundup, HF, groundup, ...) and the best time of each is
kept, so background load hits both alike. Bytes per token is measured on held-out text: the last
~4% of every source file, never trained on.

    python -m bench.bpe [--chars 16100000] [--vocab-size 8192] [--rounds 2] [--python-loop]

`--python-loop` also times the pure-Python merge loop on the same counts and checks that it
learns exactly the merges of the C loop.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HELD_OUT = 0.04


def source_texts() -> list[tuple[str, str]]:
    """(name, text) of every shared text source, in a fixed order."""
    files = sorted((SHARED / "prose").rglob("*.txt"))
    files += [SHARED / "prose" / "wikitext-2-raw" / "wiki.test.raw",
              SHARED / "tinystories" / "tinystories-v1-train-first2MiB.txt",
              SHARED / "tinystories" / "tinystories-v1-valid-head.txt",
              SHARED / "llamafactory" / "wiki_demo.txt", SHARED / "tinyshakespeare" / "input.txt"]
    out = []
    for f in files:
        if f.is_file():
            with open(f, encoding="utf-8", newline="") as fh:  # keep \r\n (wiki.test.raw) as it is
                out.append((f.name, fh.read()))
    c4 = SHARED / "llamafactory" / "c4_demo.jsonl"
    if c4.is_file():
        with open(c4, encoding="utf-8") as fh:
            out.append(("c4_demo.jsonl", "\n\n".join(json.loads(line)["text"] for line in fh if line.strip())))
    return out


def corpus(chars: int) -> tuple[list[str], str]:
    """(training texts of about `chars` characters in all, held-out text).

    Each source gives its last 4% (cut at a line start) to the held-out text, and the same
    fraction of the rest of it to the training texts, so that every source is in both."""
    train_parts, held = [], []
    for _, text in source_texts():
        cut = text.rfind("\n", 0, int(len(text) * (1 - HELD_OUT))) + 1 or int(len(text) * (1 - HELD_OUT))
        train_parts.append(text[:cut])
        held.append(text[cut:])
    total = sum(map(len, train_parts))
    if total == 0:
        raise SystemExit(f"no text found under {SHARED}")
    frac = min(1.0, chars / total)
    return [t[:int(len(t) * frac)] for t in train_parts], "\n".join(held)


def cpu_seconds() -> float:
    """CPU time of this process, its threads and its finished child processes (user + system)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def train_groundup(texts: list[str], vocab_size: int, specials: list[str]):
    from groundup.tokenizer import bpe

    t, cpu = time.perf_counter(), cpu_seconds()
    tok = bpe.train(texts, vocab_size, pattern="gpt4", special_tokens=specials, workers=2)
    return tok, time.perf_counter() - t, cpu_seconds() - cpu


def train_hf(texts: list[str], vocab_size: int, specials: list[str]):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    from groundup.tokenizer.bpe import GPT4_PATTERN

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=0)
    t, cpu = time.perf_counter(), cpu_seconds()
    tok.train_from_iterator(texts, trainer)
    return tok, time.perf_counter() - t, cpu_seconds() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chars", type=int, default=16_100_000)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--python-loop", action="store_true", help="also time the pure-Python merge loop")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "2")  # HF's thread pool: same two cores as our workers

    from groundup.tokenizer import bpe, bpe_native

    texts, held = corpus(args.chars)
    specials = list(bpe.DEFAULT_SPECIALS)
    n_chars = sum(map(len, texts))
    print(f"corpus: {n_chars:,} characters ({sum(len(t.encode()) for t in texts) / 1e6:.1f} MB) from "
          f"{len(texts)} sources; held out {len(held):,} characters; vocab {args.vocab_size:,}; "
          f"merge loop: {'C' if bpe_native.available() else 'Python (' + str(bpe_native.why_not()) + ')'}")
    ours_t, hf_t, ours_cpu, hf_cpu = [], [], [], []
    ours = hf = None
    for r in range(args.rounds):
        ours, t, cpu = train_groundup(texts, args.vocab_size, specials)
        ours_t.append(t)
        ours_cpu.append(cpu)
        s = ours.train_stats
        print(f"round {r + 1}: groundup {t:.2f} s, {cpu:.2f} s CPU (split+count {s.count_seconds:.2f} s, "
              f"merge loop {s.merge_seconds:.2f} s)", end="", flush=True)
        hf, t, cpu = train_hf(texts, args.vocab_size, specials)
        hf_t.append(t)
        hf_cpu.append(cpu)
        print(f"; HF tokenizers {t:.2f} s, {cpu:.2f} s CPU")
    assert ours is not None and hf is not None
    best_ours, best_hf = min(ours_t), min(hf_t)
    print(f"training time, best of {args.rounds}: groundup {best_ours:.2f} s, HF {best_hf:.2f} s, "
          f"ratio groundup/HF = {best_ours / best_hf:.2f} (target <= 2.00); "
          f"CPU time ratio {min(ours_cpu) / min(hf_cpu):.2f}")

    n_bytes = len(held.encode("utf-8"))
    t = time.perf_counter()
    n_ours = len(ours.encode(held))
    enc_ours = time.perf_counter() - t
    t = time.perf_counter()
    n_hf = len(hf.encode(held, add_special_tokens=False).ids)
    enc_hf = time.perf_counter() - t
    bpt_ours, bpt_hf = n_bytes / n_ours, n_bytes / n_hf
    print(f"held-out bytes/token: groundup {bpt_ours:.4f} ({n_ours:,} tokens), HF {bpt_hf:.4f} ({n_hf:,} tokens), "
          f"difference {100 * (bpt_ours / bpt_hf - 1):+.2f}% (target within 1%)")
    print(f"encode held-out ({n_bytes / 1e6:.1f} MB, one thread): groundup (tiktoken) {enc_ours:.2f} s, "
          f"HF {enc_hf:.2f} s")
    if args.python_loop:
        counts, _ = bpe.count_chunks(texts, bpe.GPT4_PATTERN, specials, workers=2)
        t = time.perf_counter()
        c_merges, _ = bpe.learn_merges(counts, args.vocab_size - len(specials), native=True)
        c_time = time.perf_counter() - t
        t = time.perf_counter()
        py_merges, _ = bpe.learn_merges(counts, args.vocab_size - len(specials), native=False)
        py_time = time.perf_counter() - t
        print(f"merge loop alone: C {c_time:.2f} s, Python {py_time:.2f} s ({py_time / c_time:.0f}x); "
              f"same merges: {c_merges == py_merges}")


if __name__ == "__main__":
    main()
