"""Tokenizers side by side: bytes per token of groundup-trained ones vs GPT-2's and SmolLM2's.

`resolve(spec)` turns a name into something that encodes: a saved groundup tokenizer (a path),
"gpt2" (GPT-2's tokenizer, built offline from its encoder.json / merges files, by default the
copies in shared/data/bpe-reference), or "smollm2" (SmolLM2-135M-Instruct's tokenizer, read from
the pulled GGUF with groundup's own llama.cpp-exact `Tokenizer`). Each has `name`, `vocab_size`,
`encode(text)` (plain text only: no special tokens) and `token_bytes(id)`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from groundup.errors import GroundupError

GPT2_FILES = Path(__file__).resolve().parents[3] / "shared" / "data" / "bpe-reference"
SMOLLM2 = "smollm2-135m-instruct"


class Encoder(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def token_bytes(self, id: int) -> bytes: ...


class TiktokenEncoder:
    """A `tiktoken.Encoding` with the small interface above."""

    def __init__(self, name: str, encoding: Any) -> None:
        self.name, self.encoding, self.vocab_size = name, encoding, encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def token_bytes(self, id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(id)


class NamedTokenizer:
    """Any groundup tokenizer (trained or the GGUF one) under a display name."""

    def __init__(self, name: str, tok: Any) -> None:
        self.name, self.tok, self.vocab_size = name, tok, tok.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_bos=False)

    def token_bytes(self, id: int) -> bytes:
        return self.tok.token_bytes(id)


def gpt2(files: str | os.PathLike | None = None) -> TiktokenEncoder:
    """GPT-2's tokenizer from gpt2_vocab.json (encoder.json): its ids are its BPE ranks, as in
    tiktoken's own "gpt2", which needs the network to fetch the same files."""
    import tiktoken

    from groundup.tokenizer.bpe import GPT2_PATTERN
    from groundup.tokenizer.gpt2_bpe import unicode_to_byte

    path = Path(files or GPT2_FILES) / "gpt2_vocab.json"
    if not path.is_file():
        raise GroundupError(f"GPT-2's vocabulary is not at {path} (shared/data/bpe-reference/gpt2_vocab.json)")
    back = unicode_to_byte()
    vocab = json.loads(path.read_text(encoding="utf-8"))
    specials = {t: i for t, i in vocab.items() if t == "<|endoftext|>"}
    ranks = {bytes(back[c] for c in t): i for t, i in vocab.items() if t not in specials}
    return TiktokenEncoder("gpt2", tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                                     special_tokens=specials))


def smollm2() -> NamedTokenizer:
    """SmolLM2-135M-Instruct's tokenizer from its pulled GGUF (GroundupError when not pulled)."""
    from groundup.registry import cached_path
    from groundup.tokenizer.tokenizer import Tokenizer
    from groundup.weights.gguf import GGUFFile

    path = cached_path(SMOLLM2)
    if path is None:
        raise GroundupError(f"{SMOLLM2} is not pulled (`groundup pull {SMOLLM2}`)")
    return NamedTokenizer("smollm2", Tokenizer.from_gguf(GGUFFile(path).meta))


def resolve(spec: str) -> Encoder:
    """A saved groundup tokenizer (path), "gpt2" or "smollm2"."""
    from groundup.tokenizer.trained import TrainedTokenizer

    if spec == "gpt2" and not Path(spec).exists():
        return gpt2()
    if spec in ("smollm2", SMOLLM2) and not Path(spec).exists():
        return smollm2()
    tok = TrainedTokenizer.load(spec)
    return NamedTokenizer(tok.name if tok.name != "groundup-bpe" else Path(spec).stem, tok)


@dataclass
class Row:
    name: str
    vocab_size: int | None
    tokens: int | None
    bytes_per_token: float | None
    note: str = ""


def compare(text: str, specs: list[str], with_references: bool = True,
            gpt2_files: str | os.PathLike | None = None) -> list[Row]:
    """Bytes per token on `text` for each tokenizer in `specs`, then GPT-2's and SmolLM2's
    (a reference that cannot be loaded becomes a row with a note instead of numbers)."""
    n_bytes = len(text.encode("utf-8"))
    loaders: list[tuple[str, Any, bool]] = [(s, lambda s=s: resolve(s), False) for s in specs]
    if with_references:
        loaders += [("gpt2", lambda: gpt2(gpt2_files), True), ("smollm2", smollm2, True)]
    rows = []
    for name, load, is_reference in loaders:
        try:
            enc = load()
        except GroundupError as e:
            if not is_reference:
                raise
            rows.append(Row(name, None, None, None, f"skipped: {e}"))
            continue
        n = len(enc.encode(text))
        rows.append(Row(enc.name, enc.vocab_size, n, n_bytes / n if n else None))
    return rows
