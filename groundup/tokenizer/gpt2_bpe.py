"""Byte-level BPE (GPT-2 style) exactly as llama.cpp runs it for `tokenizer.ggml.model = "gpt2"`.

Three pieces:

* the pre-tokenizer: text -> chunks ("words"), per `tokenizer.ggml.pre`. llama.cpp does not use a
  regex engine for these; it walks code points with its own Unicode tables (generated from Unicode
  15.1). We express the same walk as one Python regex built from explicit character classes, so the
  answer does not depend on the Python's own Unicode version. For the `smollm`/`starcoder` family
  llama.cpp first cuts every digit out as its own chunk and then runs the GPT-2 walk on each piece;
  `_DIGIT_SPLIT_GPT2` folds that two-pass split into one regex (a whitespace run right before a digit
  is a chunk end, so it is kept whole).
* the byte <-> printable-character map of GPT-2 (`bytes_to_unicode`).
* pair-rank BPE: repeatedly merge the adjacent pair with the lowest merge rank, leftmost first on a
  tie (llama.cpp's priority queue order), one merge at a time.
"""
from __future__ import annotations

import heapq
import re
from functools import lru_cache

from groundup.errors import GroundupError

# Unicode 15.1 general categories L (letters) and N (numbers), the version llama.cpp's
# unicode-data.cpp is generated from. Hex numbers alternate: gap since the end of the previous
# range, length of the range. Regenerate with `_ranges_table("L")` under Python 3.13.
_L_TABLE = """
41 1a 6 1a 2f 1 a 1 4 1 5 17 1 1f 1 1ca 4 c e 5 7 1 1 1 81 5 1 2 2 4 1 1 6 1 1 3 1 1 1 14 1
53 1 8b 8 a6 1 26 2 1 6 29 47 1b 4 4 2d 2b 23 2 1 63 1 1 f 2 7 2 a 3 2 1 10 1 1 1e 1d 59 b 1
18 21 9 2 4 1 5 16 4 1 9 1 3 1 17 19 7 b 5 18 1 6 11 2a 3a 36 3 1 12 1 7 a f 10 4 8 2 2 2 16
1 7 1 1 3 4 3 1 10 1 d 2 1 3 e 2 a 1 8 6 4 2 2 16 1 7 1 2 1 2 1 2 1f 4 1 1 13 3 10 9 1 3 1
16 1 7 1 2 1 5 3 1 12 1 f 2 17 1 b 8 2 2 2 16 1 7 1 2 1 5 3 1 1e 2 1 3 f 1 11 1 1 6 3 3 1 4
3 2 1 1 1 2 3 2 3 3 3 c 16 1 34 8 1 3 1 17 1 10 3 1 1a 3 2 1 2 2 1e 1 4 8 1 3 1 17 1 a 1 5 3
1 1f 2 1 2 f 2 11 9 1 3 1 29 2 1 10 1 5 3 8 3 18 6 5 12 3 18 1 9 1 1 2 7 3a 30 1 2 c 7 3a 2
1 1 1 5 1 18 1 1 1 a 1 2 9 1 2 5 1 1 15 4 20 1 3f 8 1 24 1b 5 73 2b 14 1 10 6 4 4 3 1 3 2 7
3 4 d c 1 11 26 1 1 5 1 2 2b 1 14d 1 4 2 7 1 1 1 4 2 29 1 4 2 21 1 4 2 7 1 1 1 4 2 f 1 39 1
4 2 43 25 10 10 56 2 6 3 26c 2 11 1 1a 5 4b 6 8 7 12 d 13 e 12 e d 1 3 f 34 23 1 4 1 43 59 7
5 2 22 1 1 5 46 a 1f 31 1e 2 5 b 2c 4 1a 36 17 9 35 52 1 5d 2f 11 8 36 1e d 2 a 2c 1a 24 29
3 a 24 2 9 7 2b 2 3 29 4 1 6 1 2 3 1 5 c0 40 116 2 6 2 26 2 6 2 8 1 1 1 1 1 1 1 1f 2 35 1 7
1 1 3 3 1 7 3 4 2 6 4 d 5 3 1 7 74 1 d 1 10 d 65 1 4 1 2 a 1 1 3 5 6 1 1 1 1 1 1 4 1 b 2 4 5
5 4 1 34 2 a7b e5 6 4 3 2 c 26 1 1 5 1 2 38 7 1 10 17 9 7 1 7 1 7 1 7 1 7 1 7 1 7 1 7 50 1
1d5 2 2a 5 5 2 4 56 6 3 1 5a 1 4 5 2b 1 5e 11 20 30 10 200 19c0 40 568d 43 2e 2 10d 3 10 a 2
14 2f 10 1f 2 46 31 9 2 67 2 40 5 2 1 1 1 5 18 10 1 3 1 4 1 17 1d 34 e 32 3e 6 3 1 1 2 b 1c
a 17 19 1d 7 2f 1c 1 10 5 1 a a 5 1 29 17 3 1 8 14 17 3 1 3 32 1 1 3 2 2 5 2 1 1 1 18 3 2 b
7 3 c 6 2 6 2 6 9 7 1 7 1 2b 1 e 6 73 1d 2ba4 c 17 4 31 2104 16e 2 6a 26 7 c 5 5 1 1 a 1 d 1
5 1 1 1 2 1 2 1 6c 21 16b 12 40 2 36 28 c 74 5 1 87 24 1a 6 1a b 59 3 6 2 6 2 6 2 3 23 c 1
1a 1 13 1 2 1 f 2 e 22 7b 185 1d 3 31 2f 20 d 14 1 8 6 26 a 1e 2 24 4 8 30 9e 12 24 4 24 4
28 8 34 c b 1 f 1 7 1 2 1 b 1 f 1 7 1 2 43 137 9 16 a 8 18 6 1 2a 1 9 45 6 2 1 1 2c 1 2 3 1
2 17 a 17 9 1f 41 13 1 2 a 16 a 1a 46 38 6 2 40 1 f 4 1 3 1 1d 2a 1d 3 1d 23 8 1 1c 1b 36 a
16 a 13 d 12 6e 49 37 33 d 33 d 24 15c 2a 6 2 4e 1d a 1 8 16 2a 12 2e 15 1b 17 c 35 39 2 2 1
d 2d 20 19 1a 24 1d 1 2 1 8 23 3 1 c 30 e 4 15 1 1 1 23 12 1 19 13 2 3f 7 1 1 1 4 1 f 1 a 7
2f 26 8 2 2 2 16 1 7 1 2 1 5 3 1 12 1 c 5 9e 35 12 4 14 3 1e 30 14 2 1 1 b8 2f 29 4 24 30 14
1 3b 2b d 1 47 1b 25 7 b9 2c 74 40 1f 8 2 1 2 8 1 2 1 18 f 1 1 1 5e 8 2 27 10 1 1 1 1c 1 a
28 7 1 15 1 b 2e 13 1 12 49 107 9 1 25 11 1 31 1e 70 7 1 2 1 26 15 1 19 6 1 2 1 20 e 1 147
13 f 1 1 d 1 22 7c 1 4f 39a e6 c4 a4c 61 f 430 11 6 fb9 247 21b9 239 7 1f 11 4f 11 1e 12 30
10 4 1f 15 5 13 2b0 40 80 4b 5 1 42 d 40 2 1 1 1c 17f8 8 4d6 2a 9 22e7 4 1 7 1 2 1 123 f 1
1d 3 2 1 e 4 8 18c 904 6b 5 d 3 9 7 a 1766 55 1 47 1 2 2 1 2 2 2 4 1 c 1 1 1 7 1 41 1 4 2 8
1 7 1 1c 1 4 1 5 1 1 3 7 1 154 2 19 1 19 1 1f 1 19 1 1f 1 19 1 1f 1 19 1 1f 1 19 1 8 734 1f
6 6 105 3e 92 2d a 7 10 1 141 1e 12 2c 1e4 1c 2f4 7 1 4 1 2 1 f 1 c5 3b 44 7 1 4b4 4 1 1b 1
2 1 1 2 1 1 a 1 4 1 1 1 1 6 1 4 1 1 1 1 1 1 3 1 2 1 1 2 1 1 1 1 1 1 1 1 1 1 2 1 1 2 4 1 7 1
4 1 4 1 1 1 a 1 11 5 3 1 5 1 11 1144 a6e0 20 103a 6 de 2 1682 e 1d31 f 26e 9a2 21e 5e2 134b
5 1060
"""
_N_TABLE = """
30 a 78 2 5 1 2 3 5a1 a 86 a c6 a 19c a 76 a 4 6 6c a 76 a 76 a 2 6 6e d 73 a 8 7 67 a 68 7
7 13 6d a 60 a 76 a 46 14 10c a 46 a 2cf 14 371 3 ef a 6 a 16 a 12c a 80 b a5 a 6 a b6 a 56
a 86 a 6 a 416 1 3 6 6 a c6 33 2 5 2d6 3c 4e 16 276 1e 569 1 309 1 19 9 e 3 157 4 8a a 1e 8
1 f 20 a 27 f 7360 a bc a 140 6 9a a 26 a c6 a 16 a 56 a 196 a 5316 a 1ed 2d c 39 11 2 155
1b 24 4 1d 1 8 1 86 5 ca a 3ae 8 19 7 27 9 4b 5 16 6 a0 2 2 10 2 2e 40 9 34 2 1e 3 4b 5 68 8
18 8 29 7 14a 6 30 a 126 1f 9e a 2a 4 70 7 86 1e 80 a 3c a 90 a 7 14 fb a 156 a 76 a 176 a
66 a 66 c 1a4 13 5d a 2f6 1d e3 a 46 a 1a6 a 66 15 42b 6f 45f1 a 56 a 86 a 1 7 31e 17 6429
14 c 14 6c 19 455 32 940 a 1a6 a 1f6 a 3cd 9 80 a 317 3b 1 3 1 4 4c 2d 1 f 3c2 d ae3 a
"""
# llama.cpp's whitespace set (unicode_set_whitespace): the Unicode White_Space property.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _ranges_table(first_letter: str) -> str:  # pragma: no cover - maintenance helper
    """Rebuild a table above from the running Python's unicodedata (use Python 3.13 = Unicode 15.1)."""
    import unicodedata

    nums, prev, start = [], 0, None
    for cp in range(0x110001):
        inside = cp < 0x110000 and unicodedata.category(chr(cp))[0] == first_letter
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            nums += [start - prev, cp - start]
            prev, start = cp, None
    return " ".join(format(n, "x") for n in nums)


def _class_body(table: str) -> str:
    """Turn a gap/length table into the inside of a regex character class."""
    nums = [int(x, 16) for x in table.split()]
    out, pos = [], 0
    for gap, length in zip(nums[::2], nums[1::2]):
        start = pos + gap
        end = start + length - 1
        out.append(re.escape(chr(start)) if start == end else f"{re.escape(chr(start))}-{re.escape(chr(end))}")
        pos = start + length
    return "".join(out)


_L = _class_body(_L_TABLE)
_N = _class_body(_N_TABLE)
_CONTRACTIONS = "'s|'t|'re|'ve|'m|'ll|'d"
_CONTRACTIONS_ANYCASE = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"

# GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
_GPT2 = (f"{_CONTRACTIONS}| ?[{_L}]+| ?[{_N}]+| ?[^{_WS}{_L}{_N}]+"
         f"|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
# \p{N} first (each digit alone), then the GPT-2 walk inside each remaining piece.
_DIGIT_SPLIT_GPT2 = (f"[{_N}]|{_CONTRACTIONS}| ?[{_L}]+| ?[^{_WS}{_L}{_N}]+"
                     f"|[{_WS}]+(?=[{_N}]|\\Z)|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
# Llama 3 / Qwen 2 (case-insensitive contractions, newline handling); digits in threes or ones.
_LLAMA3_TMPL = (f"{_CONTRACTIONS_ANYCASE}|[^\\r\\n{_L}{_N}]?[{_L}]+|[{_N}]{{DIGITS}}"
                f"| ?[^{_WS}{_L}{_N}]+[\\r\\n]*|[{_WS}]*[\\r\\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+")

_PRE_FAMILIES: dict[str, tuple[str, ...]] = {
    "gpt2": ("gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4",
             "roberta-bpe", "jina-v1-en", "jina-v2-code", "jina-es", "jina-de", "gigachat", "mellum"),
    "digits": ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b",
               "mellum2"),
    "llama3": ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
               "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe", "chatglm-bpe"),
    "qwen2": ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "megrez", "hunyuan",
              "grok-2", "solar-open"),
}
# pre-tokenizers for which llama.cpp takes a whole chunk as one token when the vocabulary has it
IGNORE_MERGES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                 "lfm2", "jina-v5-nano")
PRE_TYPES = tuple(name for names in _PRE_FAMILIES.values() for name in names)


def pre_tokenizer(pre: str) -> re.Pattern[str]:
    """The compiled chunking regex for a llama.cpp `tokenizer.ggml.pre` name."""
    family = next((fam for fam, names in _PRE_FAMILIES.items() if pre in names), None)
    if family is None:
        raise GroundupError(f"pre-tokenizer {pre!r} is not supported (known: {', '.join(PRE_TYPES)})")
    return _compile(family)


@lru_cache(maxsize=None)
def _compile(family: str) -> re.Pattern[str]:
    if family == "gpt2":
        return re.compile(_GPT2)
    if family == "digits":
        return re.compile(_DIGIT_SPLIT_GPT2)
    return re.compile(_LLAMA3_TMPL.replace("{DIGITS}", "{1,3}" if family == "llama3" else ""))


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (space -> 'Ġ', newline -> 'Ċ')."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def parse_merges(merges: list[str]) -> dict[tuple[str, str], int]:
    """'a b' lines -> {(a, b): rank}; split at the first space after the first character (llama.cpp)."""
    ranks: dict[tuple[str, str], int] = {}
    for rank, line in enumerate(merges):
        cut = line.find(" ", 1)
        if cut > 0:
            ranks.setdefault((line[:cut], line[cut + 1:]), rank)
    return ranks


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge the characters of `word` by pair rank; lowest rank first, leftmost on a tie."""
    parts = list(word)
    if len(parts) > 48:
        return _bpe_heap(parts, ranks)
    get = ranks.get
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def _bpe_heap(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Same result as `bpe`, O(n log n) for long words (a linked list and a heap, like llama.cpp)."""
    n = len(parts)
    text = parts[:]
    nxt = list(range(1, n)) + [-1]
    prv = list(range(-1, n - 1))
    heap: list[tuple[int, int, str, str]] = []

    def push(i: int) -> None:
        j = nxt[i] if i >= 0 else -1
        if i >= 0 and j >= 0:
            r = ranks.get((text[i], text[j]))
            if r is not None:
                heapq.heappush(heap, (r, i, text[i], text[j]))

    for i in range(n - 1):
        push(i)
    while heap:
        _, i, left, right = heapq.heappop(heap)
        j = nxt[i]
        if not text[i] or j < 0 or text[i] != left or text[j] != right:
            continue  # stale: one side has changed since this pair was queued
        text[i] = left + right
        text[j] = ""
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prv[nxt[j]] = i
        push(prv[i])
        push(i)
    return [t for t in text if t]
