"""SentencePiece-style BPE exactly as llama.cpp runs it for `tokenizer.ggml.model = "llama"`.

The text (spaces already replaced by U+2581 '▁') starts as one symbol per character. Every adjacent
pair whose concatenation is a vocabulary token is a candidate; the candidate whose token has the
highest score merges first (leftmost on a tie), and new candidates form around the merged symbol.
Symbols that are not tokens at the end fall back to byte tokens `<0xXX>`, one per UTF-8 byte.

llama.cpp runs this over a whole text fragment. A merge can only cross a point in the text if some
token contains the two characters on either side of that point, so we cut the text before every '▁'
that no token ever continues into (for Gemma 3 only '>▁</' does) and cache the ids of each piece:
the result is the same, and repeated words cost a dict lookup.
"""
from __future__ import annotations

import heapq
import re

SPACE = "\u2581"


class SPMEncoder:
    """Score-ordered bigram merging over one vocabulary, with per-word caching."""

    def __init__(self, tokens: list[str], scores: list[float], token_to_id: dict[str, int]) -> None:
        self.scores = scores
        self.token_to_id = token_to_id
        # characters c for which some token contains c + '▁': a cut before that '▁' is unsafe
        self.joins_space = set(re.findall(f"([^\0])(?={SPACE})", "\0".join(tokens)))
        self.byte_ids = [token_to_id.get(f"<0x{b:02X}>", token_to_id.get(chr(b), -1)) for b in range(256)]
        self.cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """Ids for an already-escaped text fragment (no special tokens inside)."""
        out: list[int] = []
        cache = self.cache
        for piece in self._pieces(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._encode_piece(piece)
                if len(cache) > 200_000:
                    cache.clear()
                cache[piece] = ids
            out.extend(ids)
        return out

    def _pieces(self, text: str) -> list[str]:
        parts = text.split(SPACE)
        pieces = [parts[0]] if parts[0] else []
        joins = self.joins_space
        for part in parts[1:]:
            if pieces and pieces[-1][-1] in joins:
                pieces[-1] += SPACE + part
            else:
                pieces.append(SPACE + part)
        return pieces

    def _encode_piece(self, piece: str) -> list[int]:
        if len(piece) > 40:
            return self._to_ids(self._merge_heap(piece))
        symbols = list(piece)
        get, scores = self.token_to_id.get, self.scores
        while len(symbols) > 1:
            best, at = None, -1
            for i in range(len(symbols) - 1):
                tid = get(symbols[i] + symbols[i + 1])
                if tid is not None and (best is None or scores[tid] > best):
                    best, at = scores[tid], i
            if best is None:
                break
            symbols[at:at + 2] = [symbols[at] + symbols[at + 1]]
        return self._to_ids(symbols)

    def _merge_heap(self, piece: str) -> list[str]:
        """The same merge order with a heap and a linked list, for long pieces."""
        text = list(piece)
        n = len(text)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int]] = []
        get, scores = self.token_to_id.get, self.scores

        def push(i: int) -> None:
            if i < 0 or nxt[i] < 0:
                return
            merged = text[i] + text[nxt[i]]
            tid = get(merged)
            if tid is not None:
                heapq.heappush(heap, (-scores[tid], i, len(merged)))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, size = heapq.heappop(heap)
            j = nxt[i]
            if not text[i] or j < 0 or len(text[i]) + len(text[j]) != size:
                continue  # stale: a side changed since the pair was queued
            text[i] += text[j]
            text[j] = ""
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            push(prv[i])
            push(i)
        return [t for t in text if t]

    def _to_ids(self, symbols: list[str]) -> list[int]:
        out: list[int] = []
        get = self.token_to_id.get
        for sym in symbols:
            tid = get(sym)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self.byte_ids[b] for b in sym.encode("utf-8") if self.byte_ids[b] >= 0)
        return out
