"""C4's line and page rules (Raffel et al. 2020), as FineWeb configured them.

Follows datatrove's `C4QualityFilter` with `filter_no_terminal_punct=False`
(FineWeb keeps lines that do not end in punctuation). Line by line, after
stripping it:
  - a line with a word longer than 1,000 characters is removed;
  - Wikipedia-style citation marks ("[1]", "[edit]", "[citation needed]") are cut out;
  - a line with fewer than 3 words is removed;
  - "lorem ipsum" anywhere in a kept line drops the whole document;
  - a line mentioning "javascript" is removed;
  - a curly bracket "{" in a kept line drops the whole document;
  - a line with a cookie / terms-of-use phrase is removed.
A document whose kept lines hold fewer than 5 sentences is dropped; otherwise
its text becomes the kept lines joined by newlines (blank lines go too).
"""
from __future__ import annotations

import re

from groundup.data.document import Document
from groundup.data.text_stats import sentence_count, words

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                  "use cookies")


class C4Quality:
    """Stage: remove C4's unwanted lines, drop pages with lorem ipsum, code braces or too few sentences."""

    name = "c4"

    def __init__(self, *, filter_no_terminal_punct: bool = False, min_num_sentences: int | None = 5,
                 min_words_per_line: int | None = 3, max_word_length: int | None = 1000,
                 remove_citations: bool = True, filter_lorem_ipsum: bool = True, filter_javascript: bool = True,
                 filter_curly_bracket: bool = True, filter_policy: bool = True,
                 policy_phrases: tuple[str, ...] = POLICY_PHRASES):
        self.filter_no_terminal_punct = filter_no_terminal_punct
        self.min_num_sentences = min_num_sentences
        self.min_words_per_line = min_words_per_line
        self.max_word_length = max_word_length
        self.remove_citations = remove_citations
        self.filter_lorem_ipsum = filter_lorem_ipsum
        self.filter_javascript = filter_javascript
        self.filter_curly_bracket = filter_curly_bracket
        self.filter_policy = filter_policy
        self.policy_phrases = tuple(p.lower() for p in policy_phrases)

    def clean(self, text: str) -> tuple[str | None, str]:
        """(reason to drop the document or None, the text with unwanted lines removed)."""
        sentences = 0
        kept: list[str] = []
        for line in text.splitlines():
            line = line.strip()
            line_words = line.split()
            if self.max_word_length is not None and any(len(w) > self.max_word_length for w in line_words):
                continue
            if self.remove_citations:
                line = CITATION.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                continue
            if self.min_words_per_line is not None and len(line_words) < self.min_words_per_line:
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return "lorem_ipsum", text
            if self.filter_javascript and "javascript" in lower:
                continue
            if self.filter_curly_bracket and "{" in line:
                return "curly_bracket", text
            if self.filter_policy and any(p in lower for p in self.policy_phrases):
                continue
            if self.min_num_sentences is not None:
                sentences += sentence_count(words(line))
            kept.append(line)
        if self.min_num_sentences is not None and sentences < self.min_num_sentences:
            return "too_few_sentences", text
        return None, "\n".join(kept).strip()

    def apply(self, doc: Document) -> Document | str:
        why, text = self.clean(doc.text)
        if why is not None:
            return f"{self.name}:{why}"
        doc.text = text
        return doc
