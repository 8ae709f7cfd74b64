"""Prefix reuse: find a cache row whose tokens start like a new prompt, so only the rest is prefilled.

The engine keeps finished sequences' key/value rows "parked" in spare cache
rows (least recently used evicted first). A new prompt is compared with the
parked rows and with the rows still generating; the longest common token
prefix is copied into the new row and prefill starts after it. This is what
makes the next turn of a conversation, `n > 1` choices, and many requests that
share a system prompt skip the shared part.
"""
from __future__ import annotations

import time


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Bookkeeping of parked rows (the rows themselves live in the KVCache)."""

    def __init__(self, first_slot: int, n_slots: int, min_reuse: int = 8) -> None:
        self.slots = list(range(first_slot, first_slot + n_slots))
        self.tokens: dict[int, list[int]] = {}  # slot -> tokens whose K/V it holds
        self.used: dict[int, float] = {}
        self.min_reuse = min_reuse
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def park_slot(self) -> int | None:
        """A row to park into: a free one, else the least recently used; None without parking rows."""
        if not self.slots:
            return None
        free = [s for s in self.slots if s not in self.tokens]
        return free[0] if free else min(self.tokens, key=self.used.__getitem__)

    def park(self, slot: int, tokens: list[int]) -> None:
        self.tokens[slot] = tokens
        self.used[slot] = time.monotonic()

    def best(self, ids: list[int], live: dict[int, list[int]]) -> tuple[int | None, int]:
        """(row, length) of the longest reusable prefix of `ids` among parked and live rows."""
        best_slot, best_len = None, 0
        for rows in (self.tokens, live):
            for slot, toks in rows.items():
                n = common_prefix(ids, toks)
                if n > best_len:
                    best_slot, best_len = slot, n
        best_len = min(best_len, len(ids) - 1)  # the last prompt token is always run, for its logits
        if best_slot is None or best_len < self.min_reuse:
            return None, 0
        if best_slot in self.tokens:
            self.used[best_slot] = time.monotonic()
        self.hits += 1
        self.reused_tokens += best_len
        return best_slot, best_len
