"""A tokenizer trained by groundup (bpe.py): encode/decode through tiktoken, save/load, exports.

The vocabulary is laid out as: the special tokens (ids 0..S-1), the 256 single bytes (byte b is
id S+b), then one token per learned merge in the order learned. That order is also each token's
BPE rank, so a `tiktoken.Encoding` built from {token bytes: id}, the pre-split pattern and the
special tokens encodes exactly as the merges say (tiktoken's core, in Rust, so encoding runs at
tiktoken's speed). Plain `encode` never produces a special token, whatever the text holds: the
text "<|bos|>" is encoded as the characters it is; `allow_special=True` turns them into ids.

Saved form (`save`/`load`): one JSON file, readable: the pattern, the special tokens and the merges,
one "left right" line per merge in GPT-2's printable byte alphabet (space = Ġ, newline = Ċ), as
in Hugging Face merges. Exports: `hf_tokenizer_json()` (Hugging Face `tokenizer.json`) and
`gguf_metadata()` (the `tokenizer.ggml.*` keys for a GGUF file, model "gpt2").
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from groundup.errors import GroundupError
from groundup.tokenizer.gpt2_bpe import byte_to_unicode, unicode_to_byte

FORMAT = "groundup-bpe"
VERSION = 1
BOS_TEXTS = ("<|bos|>", "<|endoftext|>")  # first one present is the BOS (and the end of a document)
EOT_TEXTS = ("<|assistant_end|>",)  # end of an assistant turn: generation stops there too


class TrainedTokenizer:
    """Byte-level BPE with a known merge order; see the module docstring."""

    def __init__(self, merges: list[tuple[bytes, bytes]], special_tokens: list[str], pattern: str,
                 name: str = "groundup-bpe") -> None:
        if len(set(special_tokens)) != len(special_tokens):
            raise GroundupError("special tokens must be distinct")
        self.merges = list(merges)
        self.special_tokens = list(special_tokens)
        self.pattern = pattern
        self.name = name
        n_special = len(self.special_tokens)
        self.vocab: list[bytes] = [s.encode("utf-8") for s in self.special_tokens]
        self.vocab += [bytes([b]) for b in range(256)]
        self.ranks: dict[bytes, int] = {bytes([b]): n_special + b for b in range(256)}
        for a, b in self.merges:
            if a not in self.ranks or b not in self.ranks:
                raise GroundupError(f"merge {a!r} + {b!r} uses a token that no earlier merge made")
            new = a + b
            if new not in self.ranks:
                self.ranks[new] = len(self.vocab)
                self.vocab.append(new)
        self.special_ids = {s: i for i, s in enumerate(self.special_tokens)}
        self.train_stats = None  # bpe.TrainStats when this object came from `bpe.train`
        self.bos_id = next((self.special_ids[t] for t in BOS_TEXTS if t in self.special_ids), None)
        self.eos_id = self.bos_id
        self.eot_id = next((self.special_ids[t] for t in EOT_TEXTS if t in self.special_ids), None)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"TrainedTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"specials={len(self.special_tokens)})")

    # ---- encoding (tiktoken) ------------------------------------------------------------------
    @cached_property
    def encoding(self):
        """The `tiktoken.Encoding` that does the work."""
        import tiktoken

        return tiktoken.Encoding(self.name, pat_str=self.pattern, mergeable_ranks=self.ranks,
                                 special_tokens=self.special_ids)

    def encode(self, text: str, add_bos: bool = False, allow_special: bool = False) -> list[int]:
        """Token ids for `text`; special-token text becomes special ids only with `allow_special`."""
        if not isinstance(text, str):
            raise GroundupError(f"encode() takes a str, got {type(text).__name__}")
        ids = (self.encoding.encode(text, allowed_special="all") if allow_special
               else self.encoding.encode_ordinary(text))
        if add_bos:
            if self.bos_id is None:
                raise GroundupError(f"this tokenizer has no BOS token (none of {', '.join(BOS_TEXTS)})")
            ids.insert(0, self.bos_id)
        return ids

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        """`encode` for many texts at once (tiktoken's threads); no special tokens."""
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The raw bytes of `ids`, one token after the other."""
        ids = list(ids)
        try:
            if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
                raise IndexError
            return b"".join([self.vocab[i] for i in ids])
        except (IndexError, TypeError):
            bad = next((i for i in ids if not (isinstance(i, int) and 0 <= i < self.vocab_size)), ids)
            raise GroundupError(f"token id {bad!r} is outside the vocabulary of {self.vocab_size} tokens") from None

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        """Text for `ids`; bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        if skip_special:
            ids = [i for i in ids if not self.is_special(i)]
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, id: int) -> bytes:
        return self.decode_bytes([id])

    def is_special(self, id: int) -> bool:
        return 0 <= id < len(self.special_tokens)

    def reference_encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Slow, plain-Python encoding that applies the merges themselves: per pre-split chunk,
        repeatedly merge the adjacent pair that was learned first (leftmost on a tie).
        `encode` must agree with it; the tests check that."""
        import regex

        merge_rank = {}
        for r, (a, b) in enumerate(self.merges):
            merge_rank.setdefault((a, b), r)
        pieces: list[str | int] = [text]
        if allow_special and self.special_tokens:
            cut = regex.compile("(" + "|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len,
                                                                                reverse=True)) + ")")
            pieces = [self.special_ids[p] if k % 2 else p for k, p in enumerate(cut.split(text))]
        split = regex.compile(self.pattern)
        out: list[int] = []
        for piece in pieces:
            if isinstance(piece, int):
                out.append(piece)
                continue
            for chunk in split.findall(piece):
                parts = [bytes([c]) for c in chunk.encode("utf-8")]
                while len(parts) > 1:
                    ranked = [(merge_rank.get((parts[i], parts[i + 1])), i) for i in range(len(parts) - 1)]
                    found = [(r, i) for r, i in ranked if r is not None]
                    if not found:
                        break
                    _, i = min(found)
                    parts[i:i + 2] = [parts[i] + parts[i + 1]]
                out.extend(self.ranks[p] for p in parts)
        return out

    # ---- saving -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "vocab_size": self.vocab_size,
                "pattern": self.pattern, "special_tokens": self.special_tokens, "merges": self.printable_merges()}

    def digest(self) -> str:
        """sha256 of the saved form: names this exact vocabulary (e.g. in a data manifest)."""
        return hashlib.sha256(json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the readable JSON form to `path` (atomically); returns the path."""
        data = self.to_dict()
        merges = data.pop("merges")
        head = json.dumps(data, ensure_ascii=False, indent=1)[:-2]  # one merge per line below
        body = ",\n".join("  " + json.dumps(m, ensure_ascii=False) for m in merges)
        return _write_atomic(Path(path), f'{head},\n "merges": [\n{body}\n ]\n}}\n')

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainedTokenizer":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GroundupError(f"tokenizer file {path} does not exist; train one with `groundup tokenizer train`") \
                from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GroundupError(f"{path} is not a groundup tokenizer: not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GroundupError(f"{path} is not a groundup tokenizer (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise GroundupError(f"{path} has format version {data.get('version')!r}; this groundup reads {VERSION}")
        back = unicode_to_byte()
        merges = []
        for line in data["merges"]:
            left, sep, right = line.partition(" ")
            try:
                merges.append((bytes(back[c] for c in left), bytes(back[c] for c in right)))
            except KeyError:
                sep = ""
            if not sep or not left or not right:
                raise GroundupError(f"{path}: bad merge line {line!r} (want two tokens in GPT-2's byte alphabet)")
        tok = cls(merges, data["special_tokens"], data["pattern"], name=data.get("name", path.stem))
        if tok.vocab_size != data.get("vocab_size", tok.vocab_size):
            raise GroundupError(f"{path}: the merges give {tok.vocab_size} tokens but the file says "
                                f"{data['vocab_size']}; the file is damaged")
        return tok

    # ---- exports ------------------------------------------------------------------------------
    def printable_tokens(self) -> list[str]:
        """Each token as text: special tokens as they are, the rest in GPT-2's byte alphabet.

        The exports need these to be distinct; a learned token spelled like a special one (possible
        only with a pre-split pattern that lets "<|...|>" form) is a GroundupError."""
        printable = byte_to_unicode()
        tokens = self.special_tokens + ["".join(printable[c] for c in t) for t in self.vocab[len(self.special_tokens):]]
        clash = set(self.special_tokens).intersection(tokens[len(self.special_tokens):])
        if clash:
            raise GroundupError(f"learned token {sorted(clash)[0]!r} is spelled like a special token; rename the "
                                "special token or retrain with the gpt4/gpt2 pattern")
        return tokens

    def printable_merges(self) -> list[str]:
        """Each merge as "left right" in GPT-2's byte alphabet (the Hugging Face / GGUF merges form)."""
        printable = byte_to_unicode()
        return ["".join(printable[c] for c in a) + " " + "".join(printable[c] for c in b) for a, b in self.merges]

    def hf_tokenizer_json(self) -> dict[str, Any]:
        """A Hugging Face `tokenizer.json` (BPE model; loads in `tokenizers`, encodes the same)."""
        from groundup.tokenizer.bpe import GPT2_PATTERN

        tokens = self.printable_tokens()
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        if self.pattern == GPT2_PATTERN:  # HF's ByteLevel has this split built in
            pre = byte_level
        else:
            pre = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False},
                {**byte_level, "use_regex": False}]}
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for i, s in enumerate(self.special_tokens)],
            "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            # ignore_merges: a chunk that is a whole token is that token, as in tiktoken
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                      "vocab": {t: i for i, t in enumerate(tokens)},
                      "merges": self.printable_merges()},
        }

    def save_hf(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json + tokenizer_config.json into `directory` (Hugging Face layout)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = lambda i: self.special_tokens[i] if i is not None else None  # noqa: E731
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": text(self.bos_id),
                  "eos_token": text(self.eos_id), "add_bos_token": False, "add_eos_token": False,
                  "clean_up_tokenization_spaces": False, "model_max_length": 1 << 30}
        _write_atomic(directory / "tokenizer.json", json.dumps(self.hf_tokenizer_json(), ensure_ascii=False))
        _write_atomic(directory / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=1))
        return directory

    def gguf_metadata(self) -> dict[str, Any]:
        """The `tokenizer.ggml.*` keys that describe this tokenizer in a GGUF file (llama.cpp "gpt2")."""
        from groundup.tokenizer.bpe import LLAMA_CPP_PRE, PATTERNS
        from groundup.tokenizer.tokenizer import CONTROL, NORMAL

        pre = next((LLAMA_CPP_PRE[k] for k, v in PATTERNS.items() if v == self.pattern), None)
        if pre is None:
            raise GroundupError("GGUF export needs the gpt4 or gpt2 pre-split pattern: llama.cpp knows no other "
                                "by name")
        meta: dict[str, Any] = {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": self.printable_tokens(),
            "tokenizer.ggml.token_type": [CONTROL] * len(self.special_tokens)
                                         + [NORMAL] * (self.vocab_size - len(self.special_tokens)),
            "tokenizer.ggml.merges": self.printable_merges(),
            "tokenizer.ggml.add_bos_token": False,
            "tokenizer.ggml.add_eos_token": False,
        }
        for key, tid in (("bos", self.bos_id), ("eos", self.eos_id), ("eot", self.eot_id)):
            if tid is not None:
                meta[f"tokenizer.ggml.{key}_token_id"] = tid
        return meta


def load(path: str | os.PathLike) -> TrainedTokenizer:
    """A saved groundup tokenizer (the JSON file `TrainedTokenizer.save` writes)."""
    return TrainedTokenizer.load(path)


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
