"""HTML -> main text with trafilatura, set the way FineWeb ran it.

FineWeb (datatrove's `Trafilatura(favour_precision=True)`) calls
`trafilatura.extract(html, favor_precision=True, include_comments=False,
deduplicate=True)` and leaves tables in (trafilatura's default
`include_tables=True`). We keep those settings except one: trafilatura's
`deduplicate` keeps a cache across documents and strips a paragraph once it
has seen it a few times, so a page's text would depend on which pages the
same process extracted before it (different with 1 or 8 workers, different
after a resume). It is off by default here; near-duplicate removal happens in
dedup.py instead. Pass `deduplicate=True` to get FineWeb's behaviour.

A page whose extraction yields no text is dropped with "extract:empty"; one
that makes trafilatura fail or run past `timeout_s` (checked with a timer
signal, in the main thread only) is dropped with "extract:error" or
"extract:timeout".
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from collections.abc import Iterator

from groundup.data.document import Document


class _Timeout(BaseException):  # BaseException: trafilatura's own "except Exception" must not swallow it
    pass


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise _Timeout in the main thread after `seconds` (no limit elsewhere or when None)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def extract_text(html: str, *, favor_precision: bool = True, include_comments: bool = False,
                 include_tables: bool = True, deduplicate: bool = False) -> str:
    """The main text of an HTML page ("" when there is none)."""
    import trafilatura

    text = trafilatura.extract(html, favor_precision=favor_precision, include_comments=include_comments,
                               include_tables=include_tables, deduplicate=deduplicate)
    return (text or "").strip()


class Extract:
    """Stage: replace `doc.html` by its main text in `doc.text`. Documents without html pass through."""

    name = "extract"

    def __init__(self, *, favor_precision: bool = True, include_comments: bool = False,
                 include_tables: bool = True, deduplicate: bool = False, timeout_s: float | None = 10.0):
        self.options = dict(favor_precision=favor_precision, include_comments=include_comments,
                            include_tables=include_tables, deduplicate=deduplicate)
        self.timeout_s = timeout_s

    def apply(self, doc: Document) -> Document | str:
        if doc.html is None:
            return doc if doc.text.strip() else "extract:empty"
        try:
            with _time_limit(self.timeout_s):
                text = extract_text(doc.html, **self.options)
        except _Timeout:
            return "extract:timeout"
        except Exception:  # noqa: BLE001 - trafilatura/lxml fail on some malformed pages; drop that page only
            return "extract:error"
        if not text:
            return "extract:empty"
        doc.text = text
        doc.html = None
        return doc
