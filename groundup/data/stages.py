"""The FineWeb document stages in FineWeb's order, ready for the pipeline runner.

    url filter -> extract (trafilatura) -> language ID -> Gopher repetition
    -> Gopher quality -> C4 -> FineWeb quality -> PII

Cheap, URL-only checks come first so no extraction is spent on blocked
pages; the repetition filter runs before the quality filter, and C4 (which
rewrites the text, dropping lines) before FineWeb's own rules, which then see
the cleaned text, as in FineWeb. Deduplication is not in this list: it needs
to see every document, so the runner applies `dedup.DedupIndex` once, after
these per-document stages (see dedup.py).
"""
from __future__ import annotations

from groundup.data.document import Stage
from groundup.data.extract import Extract
from groundup.data.filters_c4 import C4Quality
from groundup.data.filters_fineweb import FineWebQuality
from groundup.data.filters_gopher import GopherQuality, GopherRepetition
from groundup.data.langid import LanguageFilter
from groundup.data.pii import PIIFormatter
from groundup.data.urlfilter import URLFilter


def default_stages(languages: tuple[str, ...] | list[str] | None = ("en",)) -> list[Stage]:
    """FineWeb's per-document stages with its published thresholds (`languages=None`: keep any language)."""
    return [
        URLFilter(),
        Extract(),
        LanguageFilter(languages=languages),
        GopherRepetition(),
        GopherQuality(),
        C4Quality(),
        FineWebQuality(),
        PIIFormatter(),
    ]
