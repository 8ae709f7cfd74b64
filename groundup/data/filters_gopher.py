"""Gopher's repetition and quality filters (Rae et al. 2021, table A1), with FineWeb's thresholds.

Both follow datatrove's `GopherRepetitionFilter` / `GopherQualityFilter`, the
implementation FineWeb ran, so the published thresholds mean the same thing
here: fractions are of the whole text's characters, words are spaCy-style
tokens (text_stats.words, punctuation marks included), and a threshold is
crossed only when strictly exceeded. Every threshold is a keyword argument;
None switches that rule off.
"""
from __future__ import annotations

import re
from collections import Counter

from groundup.data.document import Document
from groundup.data.text_stats import duplicates, is_symbol_word, word_tuple

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


def _top_ngram_chars(words: tuple[str, ...], n: int) -> int:
    """Characters covered by the most frequent n-gram: len(" ".join(gram)) * its count (0 if none)."""
    counts = Counter(words[i : i + n] for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return (sum(map(len, gram)) + n - 1) * count


def _duplicate_ngram_chars(words: tuple[str, ...], n: int) -> int:
    """Characters (spaces not counted) in n-grams that repeat an earlier n-gram, scanning left to
    right and jumping past each repeat so overlapping repeats are not counted twice."""
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i <= len(words) - n:
        gram = words[i : i + n]
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


class GopherRepetition:
    """Stage: drop documents with too many repeated lines, paragraphs or n-grams."""

    name = "gopher_rep"

    def __init__(self, *, dup_line_frac: float | None = 0.3, dup_para_frac: float | None = 0.3,
                 dup_line_char_frac: float | None = 0.2, dup_para_char_frac: float | None = 0.2,
                 top_ngrams: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16)),
                 dup_ngrams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12),
                                                              (9, 0.11), (10, 0.10))):
        self.dup_line_frac = dup_line_frac
        self.dup_para_frac = dup_para_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_char_frac = dup_para_char_frac
        self.top_ngrams = tuple(top_ngrams)
        self.dup_ngrams = tuple(dup_ngrams)

    def reason(self, text: str) -> str | None:
        """Why the text fails (a short key), or None when it passes."""
        if not text:
            return "empty"
        n_chars = len(text)
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        count, chars = duplicates(paragraphs)
        if self.dup_para_frac is not None and count / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if self.dup_para_char_frac is not None and chars / n_chars > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINE_BREAK.split(text)
        count, chars = duplicates(lines)
        if self.dup_line_frac is not None and count / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if self.dup_line_char_frac is not None and chars / n_chars > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = word_tuple(text)
        for n, frac in self.top_ngrams:
            if _top_ngram_chars(words, n) / n_chars > frac:
                return f"top_{n}gram"
        for n, frac in self.dup_ngrams:
            if _duplicate_ngram_chars(words, n) / n_chars > frac:
                return f"dup_{n}gram"
        return None

    def apply(self, doc: Document) -> Document | str:
        why = self.reason(doc.text)
        return doc if why is None else f"{self.name}:{why}"


class GopherQuality:
    """Stage: drop documents outside Gopher's length, word-shape and stop-word bounds."""

    name = "gopher_qual"

    def __init__(self, *, min_doc_words: int | None = 50, max_doc_words: int | None = 100_000,
                 min_avg_word_length: float | None = 3, max_avg_word_length: float | None = 10,
                 max_symbol_word_ratio: float | None = 0.1, max_bullet_lines_ratio: float | None = 0.9,
                 max_ellipsis_lines_ratio: float | None = 0.3, min_alpha_words_ratio: float | None = 0.8,
                 min_stop_words: int | None = 2, stop_words: tuple[str, ...] = STOP_WORDS):
        self.min_doc_words = min_doc_words
        self.max_doc_words = max_doc_words
        self.min_avg_word_length = min_avg_word_length
        self.max_avg_word_length = max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = frozenset(stop_words)

    def reason(self, text: str) -> str | None:
        """Why the text fails (a short key), or None when it passes."""
        words = word_tuple(text)
        real = [w for w in words if not is_symbol_word(w)]  # words that are not only punctuation/symbols
        if self.min_doc_words is not None and len(real) < self.min_doc_words:
            return "short_doc"
        if self.max_doc_words is not None and len(real) > self.max_doc_words:
            return "long_doc"
        if not real:
            return "short_doc"
        avg = sum(map(len, real)) / len(real)
        if self.min_avg_word_length is not None and avg < self.min_avg_word_length:
            return "short_words"
        if self.max_avg_word_length is not None and avg > self.max_avg_word_length:
            return "long_words"
        n = len(words)
        if self.max_symbol_word_ratio is not None:
            if text.count("#") / n > self.max_symbol_word_ratio:
                return "hash_ratio"
            if (text.count("...") + text.count("…")) / n > self.max_symbol_word_ratio:
                return "ellipsis_ratio"
        lines = text.splitlines() or [""]
        if self.max_bullet_lines_ratio is not None:
            bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "bullet_lines"
        if self.max_ellipsis_lines_ratio is not None:
            ellipses = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
            if ellipses / len(lines) > self.max_ellipsis_lines_ratio:
                return "ellipsis_lines"
        if self.min_alpha_words_ratio is not None:
            alpha = sum(1 for w in words if any(c.isalpha() for c in w))
            if alpha / n < self.min_alpha_words_ratio:
                return "alpha_words"
        if self.min_stop_words is not None and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return "stop_words"
        return None

    def apply(self, doc: Document) -> Document | str:
        why = self.reason(doc.text)
        return doc if why is None else f"{self.name}:{why}"
