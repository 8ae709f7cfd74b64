"""Language identification, offline, with py3langid's bundled model.

FineWeb keeps English documents whose fastText lid.176 score is at least
0.65. fastText's model would have to be downloaded; py3langid ships its
naive-Bayes model inside the wheel, so this works without network. Its raw
scores are log-likelihoods, not probabilities, so the identifier is built in
its normalized-probability mode (a softmax over languages, calibrated for
text length), which makes a 0.65 threshold mean "fairly sure".

The stage stores the best language and its probability in
`doc.meta["language"]` / `doc.meta["language_score"]` and keeps the document
when any wanted language scores at least `threshold` (with `languages=None`:
when the best language does).
"""
from __future__ import annotations

import threading

from groundup.data.document import Document

_IDENTIFIER = None
_LOCK = threading.Lock()


def _identifier():
    """The py3langid model, loaded once per process (about 2 s)."""
    global _IDENTIFIER
    with _LOCK:
        if _IDENTIFIER is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


def language_scores(text: str, max_chars: int | None = 100_000) -> list[tuple[str, float]]:
    """All languages with their probability, most likely first (newlines read as spaces)."""
    if max_chars is not None:
        text = text[:max_chars]
    return [(lang, float(p)) for lang, p in _identifier().rank(text.replace("\n", " "))]


def identify(text: str, max_chars: int | None = 100_000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language."""
    return language_scores(text, max_chars)[0]


class LanguageFilter:
    """Stage: label the language; keep documents in the wanted languages scoring >= threshold."""

    name = "langid"

    def __init__(self, *, languages: tuple[str, ...] | list[str] | None = ("en",), threshold: float = 0.65,
                 max_chars: int | None = 100_000, label_only: bool = False):
        self.languages = None if languages is None else tuple(languages)
        self.threshold = threshold
        self.max_chars = max_chars
        self.label_only = label_only

    def apply(self, doc: Document) -> Document | str:
        if not doc.text.strip():
            return f"{self.name}:empty"
        scores = language_scores(doc.text, self.max_chars)
        lang, score = scores[0]
        doc.meta["language"] = lang
        doc.meta["language_score"] = round(score, 4)
        if self.label_only:
            return doc
        if self.languages is None:
            keep = score >= self.threshold
        else:
            wanted = dict(scores)
            keep = any(wanted.get(code, 0.0) >= self.threshold for code in self.languages)
        if keep:
            return doc
        return f"{self.name}:low_score" if self.languages is None or lang in self.languages else f"{self.name}:other"
