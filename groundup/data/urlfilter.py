"""URL filter: drop documents whose URL is on a block list, before any text work is spent on them.

Rules, in the order datatrove's `URLFilter` (FineWeb's first filter) applies them:
  - "url_filter:domain": the host or any parent domain of it is a blocked domain;
  - "url_filter:word": a blocked word is a whole word of the URL (split on every
    character that is not a letter or digit, lower-cased);
  - "url_filter:soft_words": at least `soft_word_threshold` soft words are;
  - "url_filter:subword": a blocked string occurs in the URL with every
    non-alphanumeric character removed.
The lists are small text files in groundup/data/blocklists/ (one entry a line,
"#" starts a comment); pass other lists as constructor arguments. A document
without a URL passes (plain-text corpora have none).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from groundup.data.document import Document

BLOCKLIST_DIR = Path(__file__).parent / "blocklists"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def load_list(path: str | Path) -> frozenset[str]:
    """Entries of a block-list file: one per line, lower-cased; blank lines and # comments skipped."""
    entries = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            entries.add(line)
    return frozenset(entries)


def url_host(url: str) -> str:
    """The host name of a URL, lower-cased, without port, credentials or a trailing dot."""
    if "://" not in url:
        url = "http://" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".")


class URLFilter:
    """Stage: drop documents whose URL matches the block lists."""

    name = "url_filter"

    def __init__(self, *, domains: Iterable[str] | None = None, words: Iterable[str] | None = None,
                 soft_words: Iterable[str] | None = None, subwords: Iterable[str] | None = None,
                 soft_word_threshold: int = 2):
        def pick(given: Iterable[str] | None, file: str) -> frozenset[str]:
            if given is None:
                return load_list(BLOCKLIST_DIR / file)
            return frozenset(w.strip().lower() for w in given if w.strip())

        self.domains = pick(domains, "domains.txt")
        self.words = pick(words, "url_words.txt")
        self.soft_words = pick(soft_words, "url_soft_words.txt")
        self.subwords = frozenset(_NON_ALNUM.sub("", w) for w in pick(subwords, "url_subwords.txt")) - {""}
        self.soft_word_threshold = soft_word_threshold

    def reason(self, url: str) -> str | None:
        """Why the URL is blocked (a short key), or None."""
        host = url_host(url)
        labels = host.split(".")
        if any(".".join(labels[i:]) in self.domains for i in range(len(labels))):
            return "domain"
        lower = url.lower()
        url_words = set(_NON_ALNUM.split(lower))
        if not self.words.isdisjoint(url_words):
            return "word"
        if len(self.soft_words & url_words) >= self.soft_word_threshold:
            return "soft_words"
        squashed = _NON_ALNUM.sub("", lower)
        if any(sub in squashed for sub in self.subwords):
            return "subword"
        return None

    def apply(self, doc: Document) -> Document | str:
        if not doc.url:
            return doc
        why = self.reason(doc.url)
        return doc if why is None else f"{self.name}:{why}"
