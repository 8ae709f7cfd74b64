"""The unit every data stage passes along, and the contract a stage follows.

A `Document` is one web page or text record. A stage is any object with a
`name` and an `apply(doc)` that returns the document to keep (possibly
changed: extracted text, PII replaced) or a short reason string saying why it
is dropped (e.g. "gopher_rep:dup_line_frac"). Reasons are counted per stage in
the pipeline report, so they stay short and stable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Document:
    text: str  # plain text (after extraction); "" until extracted when html is set
    id: str  # stable identifier (WARC-Record-ID, FineWeb id, file:line, ...)
    url: str | None = None
    source: str = ""  # file the document came from
    html: str | None = None  # raw HTML for web records, cleared after extraction
    meta: dict = field(default_factory=dict)  # language, language_score, dump, date, ...


class Stage(Protocol):
    name: str

    def apply(self, doc: Document) -> Document | str:
        """Return the document to keep, or a short reason string to drop it."""
        ...
