"""Incremental detokenization for streaming: UTF-8 safe, with stop strings held back.

Tokens can end in the middle of a UTF-8 character, so raw bytes are buffered
until they decode. Text that could still be the start of a stop string is not
released until it either completes the stop string (then generation stops and
the stop string is not shown) or stops matching.
"""
from __future__ import annotations


class IncrementalDecoder:
    def __init__(self, tokenizer, stop: list[str] | None = None) -> None:
        self.tok = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.pending_bytes = b""
        self.held = ""  # decoded text not yet released (possible stop-string prefix)
        self.text = ""  # everything released so far

    def push(self, token: int) -> tuple[str, bool]:
        """Add one token; return (newly visible text, whether a stop string was hit)."""
        self.pending_bytes += self.tok.token_bytes(token)
        try:
            new = self.pending_bytes.decode("utf-8")
            self.pending_bytes = b""
        except UnicodeDecodeError as e:
            if len(self.pending_bytes) - e.start > 3 or e.reason != "unexpected end of data":
                new = self.pending_bytes.decode("utf-8", errors="replace")  # invalid, not just incomplete
                self.pending_bytes = b""
            else:
                new = self.pending_bytes[:e.start].decode("utf-8")
                self.pending_bytes = self.pending_bytes[e.start:]
        if not self.stop:
            self.text += new
            return new, False
        self.held += new
        for s in self.stop:
            at = self.held.find(s)
            if at >= 0:
                out = self.held[:at]
                self.held = ""
                self.text += out
                return out, True
        keep = max((_overlap(self.held, s) for s in self.stop), default=0)
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep:]
        self.text += out
        return out, False

    def finish(self) -> str:
        """Release everything still held (end of generation without a stop string)."""
        out = self.held + self.pending_bytes.decode("utf-8", errors="replace")
        self.held, self.pending_bytes = "", b""
        self.text += out
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
