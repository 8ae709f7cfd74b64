"""Byte-level BPE training: text -> pre-split chunks -> counted once -> merges, learned incrementally.

Training runs in two phases:

1. **Counting.** Each document (each text given, each file) is cut at special tokens (they never
   take part in merges), each piece is split by the pre-split regex (GPT-4's pattern by default,
   GPT-2's available), and every distinct chunk is counted once, as UTF-8 bytes. Documents are
   grouped into batches of ~2M characters (long ones cut at line starts where no chunk straddles
   the cut) and counted in worker processes (`workers`, default: the CPU count): this phase is the
   costly one.
2. **Merging.** Each distinct chunk becomes a sequence of token ids (its bytes at first) with its
   count. The trainer keeps the count of every adjacent pair, an index pair -> chunks that contain
   it, and a max-heap of pairs with lazy invalidation (a popped entry whose count has since changed
   is skipped; the change pushed a fresh one). A merge rewrites only the chunks that hold the pair
   and adjusts only the counts of pairs those chunks gain or lose; nothing is recounted.

The most frequent pair wins; a tie goes to the lexicographically greater pair of raw bytes
(compare the left tokens' bytes, then the right ones'), which is what the reference merges of
stanford-cs336 assignment 1 use. A merge whose bytes already exist as a token reuses that token
(rare: two different splits of the same bytes), so the vocabulary counts distinct byte strings.

The merge loop has two implementations with identical results: `bpe_native` (C, compiled once
with the system compiler) and `merge_loop_python` here, used when no compiler is available.
"""
from __future__ import annotations

import heapq
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from groundup.errors import GroundupError

if TYPE_CHECKING:
    from groundup.tokenizer.trained import TrainedTokenizer

# GPT-4's (cl100k) pre-split, with the contractions spelled out instead of (?i:...) so that every
# regex engine involved (Python `regex`, tiktoken's fancy-regex, HF's Oniguruma, llama.cpp's "llama3"
# walk) reads it alike. GPT-2's is the original one from OpenAI's encoder.py.
GPT4_PATTERN = (r"'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PATTERNS = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}
# llama.cpp's name for each pattern (GGUF tokenizer.ggml.pre): its "llama3" walk is GPT-4's split
LLAMA_CPP_PRE = {"gpt4": "llama-bpe", "gpt2": "gpt2"}

# document start, chat roles, tool calls; a model trained on this vocabulary learns what they mean
DEFAULT_SPECIALS = (
    "<|bos|>",
    "<|system_start|>", "<|system_end|>",
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|tool_call_start|>", "<|tool_call_end|>",
    "<|tool_result_start|>", "<|tool_result_end|>",
)
BLOCK_CHARS = 2_000_000  # text per counting task


def train(texts: Iterable[str], vocab_size: int, *, pattern: str = "gpt4",
          special_tokens: Iterable[str] = DEFAULT_SPECIALS, max_chars: int | None = None,
          workers: int | None = None, native: bool | None = None) -> "TrainedTokenizer":
    """Train a byte-level BPE tokenizer on `texts` (at most `max_chars` characters of them).

    `pattern` is "gpt4", "gpt2" or a regex of your own. The vocabulary holds the special tokens
    (ids 0..), the 256 bytes, then one token per learned merge, `vocab_size` in all.
    `native=None` uses the C merge loop when it builds and Python otherwise; True/False force one.
    """
    from groundup.tokenizer.trained import TrainedTokenizer

    specials = list(dict.fromkeys(special_tokens))
    regex_src = PATTERNS.get(pattern, pattern)
    if vocab_size < len(specials) + 256:
        raise GroundupError(f"vocab size {vocab_size} is too small: it needs at least {len(specials) + 256} "
                            f"(256 bytes + {len(specials)} special tokens)")
    t0 = time.perf_counter()
    counts, n_chars = count_chunks(texts, regex_src, specials, max_chars=max_chars, workers=workers)
    if not counts:
        raise GroundupError("no training text: the input is empty")
    t1 = time.perf_counter()
    merges, loop = learn_merges(counts, vocab_size - len(specials), native=native)
    t2 = time.perf_counter()
    tok = TrainedTokenizer(merges, specials, pattern=regex_src)
    tok.train_stats = TrainStats(n_chars, len(counts), sum(counts.values()), t1 - t0, t2 - t1, loop)
    return tok


@dataclass
class TrainStats:
    """What one training run saw and where its time went."""
    chars: int  # characters of training text read
    distinct_chunks: int  # distinct pre-split chunks
    chunks: int  # pre-split chunks in all
    count_seconds: float  # phase 1: pre-split and count
    merge_seconds: float  # phase 2: the merge loop
    merge_loop: str  # "C" or "Python"


def train_files(paths: Iterable[str | os.PathLike], vocab_size: int, **kw) -> "TrainedTokenizer":
    """`train` on the text of files (UTF-8), read piece by piece; each file is its own document."""
    return train(read_files(paths), vocab_size, **kw)


def read_files(paths: Iterable[str | os.PathLike], block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """The text of each file, in pieces of about `block_chars` characters cut where no pre-split
    chunk straddles the cut (see `_safe_cut`), so each piece can be split on its own."""
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise GroundupError(f"training file {path} does not exist")
        try:
            with open(path, encoding="utf-8", newline="") as f:  # newline="": keep \r\n as it is
                yield from _safe_pieces(iter(lambda: f.read(block_chars), ""), block_chars)
        except UnicodeDecodeError as e:
            raise GroundupError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


# ---- phase 1: counting ----------------------------------------------------------------------

def _safe_pieces(parts: Iterable[str], block_chars: int) -> Iterator[str]:
    """Re-cut consecutive `parts` of one text into pieces of about `block_chars` characters at
    places where the pre-split of the whole text also ends a chunk (`_safe_cut`); a text with no
    such place (four blocks without a space or newline) is cut anyway."""
    buf = ""
    for part in parts:
        buf += part
        pos = 0
        while len(buf) - pos >= block_chars:
            cut = _safe_cut(buf, pos, pos + block_chars)
            if cut is None:
                if len(buf) - pos < 4 * block_chars:
                    break
                cut = pos + block_chars
            yield buf[pos:cut]
            pos = cut
        buf = buf[pos:]
    if buf:
        yield buf


def _safe_cut(text: str, start: int, end: int) -> int | None:
    """The last place in (start, end] where cutting `text` changes no pre-split chunk, or None.

    Two kinds, valid for both patterns: right after a newline that has non-space on both sides
    (the chunk holding the newline ends with it; none starts before it and runs into the next
    line), else right before a space that follows a non-space (no chunk holds a non-space and then
    a space: a space only ever starts a chunk or sits in an all-whitespace one)."""
    i = text.rfind("\n", start, end)
    while i > start:
        if i + 1 < len(text) and not text[i + 1].isspace() and not text[i - 1].isspace():
            return i + 1
        i = text.rfind("\n", start, i)
    i = text.rfind(" ", start + 1, end)
    while i > start:
        if not text[i - 1].isspace():
            return i
        i = text.rfind(" ", start + 1, i)
    return None


def _batches(texts: Iterable[str], max_chars: int | None, block_chars: int) -> Iterator[list[str]]:
    """Group the documents into batches of about `block_chars` characters (a long document is cut
    into safe pieces first), stopping after `max_chars` characters."""
    left = max_chars if max_chars is not None else -1
    batch: list[str] = []
    size = 0
    for text in texts:
        if left == 0:
            break
        if 0 < left < len(text):
            text = text[:left]
        if left > 0:
            left -= len(text)
        for piece in _safe_pieces([text], block_chars) if len(text) > block_chars else [text]:
            batch.append(piece)
            size += len(piece)
            if size >= block_chars:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


_worker_split: tuple | None = None


def _compile(pattern: str, specials: list[str]) -> tuple:
    import regex

    cut = regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))) if specials else None
    return regex.compile(pattern), cut


def _init_worker(pattern: str, specials: list[str]) -> None:
    global _worker_split
    _worker_split = _compile(pattern, specials)


def _count_batch(texts: list[str], split: tuple | None = None) -> dict[bytes, int]:
    """{chunk as UTF-8 bytes: count} for a batch of texts."""
    pat, cut = split or _worker_split
    counts: Counter[str] = Counter()
    for text in texts:
        for piece in cut.split(text) if cut is not None else (text,):
            counts.update(pat.findall(piece))
    return {k.encode("utf-8", "surrogatepass"): v for k, v in counts.items()}


def count_chunks(texts: Iterable[str], pattern: str, specials: list[str], *, max_chars: int | None = None,
                 workers: int | None = None, block_chars: int = BLOCK_CHARS) -> tuple[dict[bytes, int], int]:
    """({distinct pre-split chunk: count}, characters read) for `texts`.

    Each text is a document of its own: no chunk spans two of them. Special tokens are cut out
    before the split. Batches of about `block_chars` characters go to `workers` processes."""
    try:
        split = _compile(pattern, specials)
    except Exception as e:  # regex.error and friends: the user's own pattern
        raise GroundupError(f"pre-split pattern does not compile: {e}") from None
    n_chars = 0

    def measured(batches: Iterator[list[str]]) -> Iterator[list[str]]:
        nonlocal n_chars
        for batch in batches:
            n_chars += sum(map(len, batch))
            yield batch

    batches = measured(_batches(texts, max_chars, block_chars))
    first = next(batches, None)
    if first is None:
        return {}, 0
    second = next(batches, None)
    workers = workers or os.cpu_count() or 1
    total: Counter[bytes] = Counter()
    if second is None or workers == 1:  # one batch (or one worker): no processes to start
        for batch in (first, *([second] if second is not None else []), *batches):
            _merge_counts(total, _count_batch(batch, split))
        return dict(total), n_chars
    import multiprocessing

    # fork: workers start at once and need no `if __name__ == "__main__"` guard in the caller's script
    # (spawn re-imports it); they only run regex + Counter, so threads the parent holds do not matter
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(pattern, specials)) as pool:
        in_flight = [pool.submit(_count_batch, first), pool.submit(_count_batch, second)]
        for batch in batches:  # at most 2 batches per worker in flight: memory stays bounded
            if len(in_flight) >= 2 * workers:
                _merge_counts(total, in_flight.pop(0).result())
            in_flight.append(pool.submit(_count_batch, batch))
        for fut in in_flight:
            _merge_counts(total, fut.result())
    return dict(total), n_chars


def _merge_counts(total: Counter, part: dict) -> None:
    if not total:
        total.update(part)  # an empty Counter takes dict.update's C path
        return
    get = total.get
    for k, v in part.items():
        total[k] = get(k, 0) + v


# ---- phase 2: merging -----------------------------------------------------------------------

def learn_merges(counts: dict[bytes, int], n_tokens: int, native: bool | None = None
                 ) -> tuple[list[tuple[bytes, bytes]], str]:
    """The merges that grow the 256 byte tokens to `n_tokens` distinct tokens (fewer if pairs run out),
    each (left bytes, right bytes) in the order learned, and which loop ran ("C" or "Python")."""
    words = [w for w in counts if len(w) > 1]  # one-byte chunks hold no pair
    freqs = [counts[w] for w in words]
    pairs, loop = None, "C"
    if native is not False:
        from groundup.tokenizer import bpe_native

        pairs = bpe_native.merge_loop(words, freqs, n_tokens, required=bool(native))
    if pairs is None:
        pairs, loop = merge_loop_python(words, freqs, n_tokens), "Python"
    vocab = [bytes([b]) for b in range(256)]
    seen = set(vocab)
    merges = []
    for a, b in pairs:
        merges.append((vocab[a], vocab[b]))
        new = vocab[a] + vocab[b]
        if new not in seen:
            seen.add(new)
            vocab.append(new)
    return merges, loop


def _desc_key(data: bytes) -> tuple[int, ...]:
    """Sorts ascending exactly as `data` sorts descending (a prefix sorts after its extensions)."""
    return (*(-c for c in data), 1)


def merge_loop_python(words: list[bytes], freqs: list[int], n_tokens: int) -> list[tuple[int, int]]:
    """The incremental merge loop in Python: (left id, right id) per merge; ids 0-255 are bytes,
    then each new byte string gets the next id in order of creation."""
    tok = [bytes([b]) for b in range(256)]
    ids = {t: i for i, t in enumerate(tok)}
    keys = [_desc_key(t) for t in tok]
    seqs = [list(w) for w in words]
    SHIFT = 32
    LOW = (1 << SHIFT) - 1
    pair_count: dict[int, int] = {}
    where: dict[int, set[int]] = {}
    for wi, seq in enumerate(seqs):
        f = freqs[wi]
        for a, b in zip(seq, seq[1:]):
            p = a << SHIFT | b
            pair_count[p] = pair_count.get(p, 0) + f
            s = where.get(p)
            if s is None:
                where[p] = {wi}
            else:
                s.add(wi)
    heap = [(-c, keys[p >> SHIFT], keys[p & LOW], p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    pop, push = heapq.heappop, heapq.heappush
    while len(tok) < n_tokens and heap:
        negc, _, _, p = pop(heap)
        if pair_count.get(p, 0) != -negc:
            continue  # stale entry: the count changed after it was pushed
        a, b = p >> SHIFT, p & LOW
        merged = tok[a] + tok[b]
        new = ids.get(merged)
        if new is None:
            new = len(tok)
            tok.append(merged)
            ids[merged] = new
            keys.append(_desc_key(merged))
        merges.append((a, b))
        delta: dict[int, int] = {}
        for wi in where.pop(p):
            seq = seqs[wi]
            n = len(seq)
            out = []
            i = 0
            while i < n:
                if i + 1 < n and seq[i] == a and seq[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            if len(out) == n:
                continue  # an index entry left over from before: the chunk lost the pair since
            f = freqs[wi]
            for x, y in zip(seq, seq[1:]):
                q = x << SHIFT | y
                delta[q] = delta.get(q, 0) - f
            for x, y in zip(out, out[1:]):
                q = x << SHIFT | y
                delta[q] = delta.get(q, 0) + f
                if x == new or y == new:
                    s = where.get(q)
                    if s is None:
                        where[q] = {wi}
                    else:
                        s.add(wi)
            seqs[wi] = out
        for q, d in delta.items():
            if d:
                c = pair_count.get(q, 0) + d
                if c > 0:
                    pair_count[q] = c
                    push(heap, (-c, keys[q >> SHIFT], keys[q & LOW], q))
                else:
                    pair_count.pop(q, None)
        pair_count.pop(p, None)
    return merges
