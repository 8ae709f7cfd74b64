"""Token shards: documents -> token ids -> flat binary files plus a manifest the DataLoader reads.

Layout of a tokenized output directory:

    manifest.json              what is here: tokenizer (name, sha256, vocab size, BOS), dtype,
                               documents and tokens per split, the shard list, the source files
    train/NNNNN-KKKK.bin       raw little-endian token ids (uint16 when the vocabulary fits, else
    val/NNNNN-KKKK.bin         uint32), no header; NNNNN = the pipeline task, KKKK = its shard number

Every document is written as BOS followed by its tokens, so documents stay separable in the
stream. A document goes to the validation split when a hash of its id falls below
`val_fraction` (deterministic: the same id always lands in the same split). A shard is written
to `<name>.tmp` and renamed into place when complete, so a reader never sees a half-written one.

Tokenizers: any object with `encode(text, add_bos=False) -> list[int]`, `bos_id` and
`vocab_size`. `load_tokenizer(spec)` accepts a registry name (SmolLM2's vocabulary from its
GGUF), a GGUF file, a groundup-trained tokenizer file (tokenizer/trained.py) or a directory
holding one, a Hugging Face tokenizer.json directory, or `bytes` (UTF-8 bytes + BOS = 257 ids;
no download, used by tests and quick runs).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from groundup.errors import GroundupError
from groundup.registry import sha256_file

MANIFEST = "manifest.json"
FORMAT = "groundup-shards/1"
SHARD_TOKENS = 50_000_000  # tokens per shard before a new one starts (100 MB at uint16)


class TextTokenizer(Protocol):
    bos_id: int | None
    vocab_size: int

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...


@dataclass
class TokenizerInfo:
    """What the manifest records about the tokenizer, so a loader can check it has the right one."""

    name: str
    sha256: str
    vocab_size: int
    bos_id: int
    bos: str  # the BOS token's text

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255 and BOS = 256: a real, dependency-free tokenizer for tests and smoke runs."""

    vocab_size = 257
    bos_id = 256

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8", errors="replace"))
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def dtype_for_vocab(vocab_size: int) -> str:
    """uint16 when every id fits in 16 bits, else uint32."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic split: the first 8 bytes of sha1(id) as a fraction of 2**64, below `fraction`."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8", errors="replace")).digest()[:8], "big")
    return h / 2.0 ** 64 < fraction


def load_tokenizer(spec: str) -> tuple[TextTokenizer, TokenizerInfo]:
    """Resolve `spec` (registry name, GGUF file, tokenizer directory, or `bytes`) to a tokenizer."""
    if spec == "bytes":
        tok: Any = ByteTokenizer()
        return tok, TokenizerInfo("bytes", hashlib.sha256(b"groundup-bytes-v1").hexdigest(), 257, 256, "<bos>")
    path = Path(spec).expanduser()
    from groundup.registry import lookup

    if lookup(spec) is not None or (path.is_file() and path.suffix == ".gguf"):
        from groundup.registry import entry, resolve
        from groundup.tokenizer.tokenizer import Tokenizer
        from groundup.weights.gguf import GGUFFile

        if lookup(spec) is not None:
            e = entry(spec)
            gguf, name, digest = resolve(spec, verify_sha=False), e.name, e.sha256
        else:
            gguf, name, digest = path, path.name, sha256_file(path)
        tok = Tokenizer.from_gguf(GGUFFile(gguf).meta)
    elif path.is_file() or path.is_dir():
        tok, name, digest = _load_path(path)
    else:
        raise GroundupError(f"unknown tokenizer {spec!r}; use a registry name (smollm2-135m-instruct), a .gguf file, "
                            "a tokenizer file or directory, or `bytes`")
    bos = getattr(tok, "bos_id", None)
    if bos is None:
        raise GroundupError(f"tokenizer {spec} has no BOS token; documents in shards are separated by BOS")
    vocab = int(getattr(tok, "vocab_size", 0) or len(tok))  # type: ignore[arg-type]
    text = tok.tokens[bos] if hasattr(tok, "tokens") else _bos_text(tok, bos)
    return tok, TokenizerInfo(name, digest, vocab, int(bos), text)


def _bos_text(tok: Any, bos: int) -> str:
    try:
        return tok.decode([bos])
    except Exception:  # a decoder that skips specials, or none at all
        return f"<id {bos}>"


def _is_trained(path: Path) -> bool:
    """A groundup-trained tokenizer file (tokenizer/trained.py's JSON, "format": "groundup-bpe")."""
    try:
        with open(path, "rb") as f:
            return b'"groundup-bpe"' in f.read(4096)
    except OSError:
        return False


def _load_path(path: Path) -> tuple[Any, str, str]:
    """(tokenizer, name, sha256) for a groundup-trained tokenizer file or a Hugging Face tokenizer directory."""
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        trained_files = sorted(p for p in path.glob("*.json") if _is_trained(p))
        if len(trained_files) != 1:
            raise GroundupError(f"{path} holds no tokenizer.json and {len(trained_files)} groundup tokenizer files; "
                                "pass the tokenizer file itself")
        path = trained_files[0]
    if path.is_file() and _is_trained(path):
        from groundup.tokenizer.trained import TrainedTokenizer

        tok = TrainedTokenizer.load(path)
        return tok, tok.name, tok.digest()
    directory = path if path.is_dir() else path.parent
    if path.is_file() and path.name != "tokenizer.json" or not (directory / "tokenizer.json").is_file():
        raise GroundupError(f"{path} is not a tokenizer (neither a groundup tokenizer file nor a Hugging Face "
                            "tokenizer.json directory)")
    from groundup.tokenizer.tokenizer import Tokenizer

    h = hashlib.sha256()
    for f in sorted(p for p in directory.iterdir() if p.is_file() and p.name.startswith("tokenizer")):
        h.update(f.name.encode() + b"\0" + bytes.fromhex(sha256_file(f)))
    return Tokenizer.from_hf_dir(directory), directory.name, h.hexdigest()


class ShardWriter:
    """Append documents' token ids to `<dir>/<prefix>-KKKK.bin` shards, each published by rename when full."""

    def __init__(self, directory: Path, prefix: str, dtype: str, max_tokens: int = SHARD_TOKENS) -> None:
        self.directory, self.prefix, self.dtype, self.max_tokens = Path(directory), prefix, dtype, max_tokens
        self.code = "H" if dtype == "uint16" else ("I" if array("I").itemsize == 4 else "L")
        self.limit = (1 << 16) if dtype == "uint16" else (1 << 32)
        self.shards: list[dict[str, Any]] = []  # finished: file (relative to directory's parent), tokens, documents
        self._buf = array(self.code)
        self._file = None
        self._tokens = self._docs = 0
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self) -> Path:
        return self.directory / f"{self.prefix}-{len(self.shards):04d}.bin"

    def add(self, ids: list[int]) -> None:
        """One document's ids (BOS included). Ids outside the dtype's range are an error."""
        if ids and (max(ids) >= self.limit or min(ids) < 0):
            raise GroundupError(f"token id {max(ids)} does not fit {self.dtype}; the manifest's vocab size is wrong")
        if self._file is None:
            self._file = open(self._path().with_suffix(".bin.tmp"), "wb")
        self._buf.extend(ids)
        self._tokens += len(ids)
        self._docs += 1
        if len(self._buf) >= 1 << 20:
            self._flush()
        if self._tokens >= self.max_tokens:
            self._finish()

    def _flush(self) -> None:
        if self._file is not None and self._buf:
            if sys.byteorder == "big":
                self._buf.byteswap()
            self._file.write(self._buf.tobytes())
            self._buf = array(self.code)

    def _finish(self) -> None:
        if self._file is None:
            return
        self._flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._path()
        os.replace(final.with_suffix(".bin.tmp"), final)
        self.shards.append({"file": f"{self.directory.name}/{final.name}", "tokens": self._tokens,
                            "documents": self._docs})
        self._file, self._tokens, self._docs = None, 0, 0

    def close(self) -> list[dict[str, Any]]:
        """Publish the last shard; return the list of finished shards."""
        self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (its .tmp file); finished shards stay."""
        if self._file is not None:
            self._file.close()
            self._path().with_suffix(".bin.tmp").unlink(missing_ok=True)
            self._file = None


def document_ids(tok: TextTokenizer, text: str) -> list[int]:
    """BOS + the document's tokens."""
    assert tok.bos_id is not None
    return [tok.bos_id, *tok.encode(text, add_bos=False)]


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(out: Path, info: TokenizerInfo, dtype: str, splits: dict[str, list[dict[str, Any]]],
                   sources: list[dict[str, Any]], val_fraction: float) -> dict[str, Any]:
    """Write manifest.json for `splits` (name -> shard list); return it."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "tokenizer": info.as_dict(),
        "dtype": dtype,
        "val_fraction": val_fraction,
        "documents": sum(s["documents"] for shards in splits.values() for s in shards),
        "tokens": sum(s["tokens"] for shards in splits.values() for s in shards),
        "splits": {name: {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards),
                          "shards": shards} for name, shards in splits.items()},
        "sources": sources,
    }
    write_json_atomic(Path(out) / MANIFEST, manifest)
    return manifest


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a tokenized directory, checked against the shard files' sizes."""
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise GroundupError(f"{out} has no {MANIFEST}; run `groundup data run ... --out {out}` first") from None
    except ValueError as ex:
        raise GroundupError(f"{path} is not valid JSON ({ex}); re-run the pipeline") from None
    if manifest.get("format") != FORMAT:
        raise GroundupError(f"{path} is not a groundup shard manifest (format {manifest.get('format')!r})")
    width = 2 if manifest["dtype"] == "uint16" else 4
    for split in manifest["splits"].values():
        for s in split["shards"]:
            f = Path(out) / s["file"]
            size = f.stat().st_size if f.is_file() else -1
            if size != s["tokens"] * width:
                raise GroundupError(f"shard {f} has {size} bytes, the manifest says {s['tokens'] * width}; "
                                    "the output is incomplete, re-run the pipeline")
    return manifest
