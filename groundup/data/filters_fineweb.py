"""FineWeb's own quality rules (Penedo et al. 2024), as datatrove's `FineWebQualityFilter` runs them.

Over the non-blank lines of a document:
  - at least 12% of lines end in sentence-ending punctuation ("line_punct_ratio");
  - at most 67% of lines are 30 characters or shorter ("short_line_ratio");
  - characters in lines that repeat an earlier line are at most 1% of the
    text's non-newline characters ("char_dup_ratio");
  - newlines are at most 0.3 per word ("list_ratio": lists and menus).
"""
from __future__ import annotations

from groundup.data.document import Document
from groundup.data.text_stats import duplicates, ends_with_terminal_punctuation, word_tuple


class FineWebQuality:
    """Stage: drop list-like, fragmentary or self-repeating documents."""

    name = "fineweb"

    def __init__(self, *, line_punct_thr: float | None = 0.12, line_punct_exclude_zero: bool = False,
                 short_line_thr: float | None = 0.67, short_line_length: int = 30,
                 char_duplicates_ratio: float | None = 0.01, new_line_ratio: float | None = 0.3):
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.short_line_thr = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio

    def reason(self, text: str) -> str | None:
        """Why the text fails (a short key), or None when it passes."""
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "empty"
        if self.line_punct_thr is not None:
            ratio = sum(1 for line in lines if ends_with_terminal_punctuation(line)) / len(lines)
            if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
                return "line_punct_ratio"
        if self.short_line_thr is not None:
            ratio = sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines)
            if ratio > self.short_line_thr:
                return "short_line_ratio"
        if self.char_duplicates_ratio is not None:
            chars = len(text) - text.count("\n")
            if duplicates(lines)[1] / max(chars, 1) > self.char_duplicates_ratio:
                return "char_dup_ratio"
        if self.new_line_ratio is not None:
            n_words = len(word_tuple(text))
            if text.count("\n") / max(n_words, 1) > self.new_line_ratio:
                return "list_ratio"
        return None

    def apply(self, doc: Document) -> Document | str:
        why = self.reason(doc.text)
        return doc if why is None else f"{self.name}:{why}"
