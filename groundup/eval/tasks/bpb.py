"""Bits per byte (and perplexities) of a model on any UTF-8 text file, with `Rolling` requests.

The file's exact text (bytes decoded as UTF-8, line endings kept) is cut into docs at line ends,
each about `chunk_chars` characters (a longer line is cut inside); the docs joined give back
the file. Each doc is one `Rolling(text)` request, answered with (sum of log P over the doc's
tokens, number of tokens); the model sees each doc from its start (the backend rolls its own
context windows over long docs).

Aggregate over the whole text, not per doc: `score` returns the sums for one doc and
`aggregate(per_doc)` (the harness calls a task's own aggregate when it has one) adds them up:

    bits_per_byte   = -sum(logprob_sum) / ln 2 / sum(bytes)     (tokenizer-independent)
    byte_perplexity = 2 ** bits_per_byte
    word_perplexity = exp(-sum(logprob_sum) / sum(words))         (words = whitespace-separated runs)
    token_perplexity = exp(-sum(logprob_sum) / sum(tokens))       (depends on the tokenizer)

A mean of per-doc ratios would weigh a short doc like a long one; these are byte-weighted.
"""
from __future__ import annotations

import math
from pathlib import Path

from groundup.errors import GroundupError
from groundup.eval.task import Request, Rolling, TaskConfig


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as ex:
        raise GroundupError(f"cannot read {path}: {ex.strerror}") from None
    except UnicodeDecodeError as ex:
        raise GroundupError(f"{path} is not UTF-8 text (byte {ex.start}); bits-per-byte needs UTF-8") from None


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Consecutive pieces of `text`, cut after a newline once a piece reaches chunk_chars; "".join() == text."""
    pieces, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > chunk_chars:  # a line longer than a chunk: cut it
            if current:
                pieces.append("".join(current))
                current, size = [], 0
            pieces.append(line[:chunk_chars])
            line = line[chunk_chars:]
        current.append(line)
        size += len(line)
        if size >= chunk_chars:
            pieces.append("".join(current))
            current, size = [], 0
    if current:
        pieces.append("".join(current))
    return [p for p in pieces if p]


class BitsPerByte:
    output_type = "rolling"
    default_fewshot = 0

    def __init__(self, path: str | Path, chunk_chars: int = 8192, name: str | None = None):
        if chunk_chars < 1:
            raise GroundupError("chunk_chars must be at least 1")
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.name = name or f"bpb:{self.path.name}"
        self._docs: list[dict] | None = None

    def docs(self) -> list[dict]:
        if self._docs is None:
            text = read_text(self.path)
            if not text:
                raise GroundupError(f"{self.path} is empty; nothing to score")
            self._docs = [{"text": t, "_id": str(i)} for i, t in enumerate(chunk_text(text, self.chunk_chars))]
        return self._docs

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        return [Rolling(doc["text"])]

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        logprob, tokens = results[0]
        return {"logprob_sum": float(logprob), "tokens": float(tokens),
                "bytes": float(len(doc["text"].encode("utf-8"))), "words": float(len(doc["text"].split()))}

    def aggregate(self, per_doc: list[dict[str, float]]) -> dict[str, float]:
        return aggregate_bpb(per_doc)


def aggregate_bpb(scores: list[dict[str, float]]) -> dict[str, float]:
    """Whole-text bits_per_byte and perplexities from per-doc sums (see the module docstring)."""
    lp = sum(s["logprob_sum"] for s in scores)
    nbytes = sum(s["bytes"] for s in scores)
    words = sum(s["words"] for s in scores)
    tokens = sum(s["tokens"] for s in scores)
    bpb = -lp / math.log(2) / max(1.0, nbytes)
    return {"bits_per_byte": bpb, "byte_perplexity": 2.0 ** bpb,
            "word_perplexity": math.exp(-lp / words) if words else float("nan"),
            "token_perplexity": math.exp(-lp / tokens) if tokens else float("nan"),
            "logprob_sum": lp, "bytes": nbytes, "words": words, "tokens": tokens}
