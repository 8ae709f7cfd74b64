"""Readers: turn WARC, JSONL, Parquet and plain-text files into a stream of `Document`s.

Every reader is a generator `read_*(path, stats=None) -> Iterator[Document]`;
`read_any(path)` picks one by the file's suffix. Bad input never raises out of
a reader in the middle of a pipeline: a truncated gzip stream or WARC record,
a JSONL line that is not JSON, or bytes that are not UTF-8 end that record or
that file cleanly, and what happened is counted in a `ReadStats` the caller
passes in (records read, records skipped, characters replaced, whether the
file was truncated, the first few error messages), so the pipeline report can
say it. Only a path that does not exist or has an unknown suffix raises
`GroundupError` (that is the user's mistake, found before any work starts).

WARC: `response` records whose HTTP Content-Type (or WARC-Identified-Payload-Type)
is HTML become `Document(html=..., text="", id=WARC-Record-ID, url=WARC-Target-URI)`;
the HTML is decoded with the charset the HTTP header declares, else UTF-8, and
with errors="replace" as a last resort. Parquet follows the FineWeb schema
(`text, id, dump, url, date, language, language_score, token_count, score,
int_score`) and is streamed one row group at a time.
"""
from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from groundup.data.document import Document
from groundup.errors import GroundupError

MAX_ERRORS_KEPT = 5  # error messages remembered per file; the rest are only counted
_CHARSET = re.compile(rb"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_FINEWEB_META = ("dump", "date", "language", "language_score", "token_count", "score", "int_score")


@dataclass
class ReadStats:
    """What reading one or more files produced, for the pipeline report."""

    files: int = 0
    records: int = 0  # documents yielded
    skipped: int = 0  # records seen but not turned into documents (not HTML, bad JSON, empty)
    replaced_chars: int = 0  # U+FFFD characters introduced by decoding invalid bytes
    docs_with_replacements: int = 0
    truncated_files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def note_error(self, path: str | Path, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{path}: {message}")

    def note_replaced(self, n: int) -> None:
        if n > 0:
            self.replaced_chars += n
            self.docs_with_replacements += 1


# Labels that web pages declare for encodings Python knows by a wider name
# (the WHATWG encoding standard maps them the same way browsers do).
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252",
                    "latin1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "x-sjis": "shift_jis"}


def decode_bytes(data: bytes, charsets: tuple[str | None, ...] = (), stats: ReadStats | None = None) -> str:
    """Decode with the first declared charset that fits, else UTF-8; invalid bytes become U+FFFD (counted)."""
    tried: list[str] = []
    for enc in (*charsets, "utf-8"):
        if not enc:
            continue
        enc = _CHARSET_ALIASES.get(enc.lower(), enc)
        try:
            codecs.lookup(enc)
        except LookupError:
            continue
        tried.append(enc)
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    enc = tried[0] if tried else "utf-8"
    text = data.decode(enc, errors="replace")
    if stats is not None:  # count only the U+FFFD that decoding introduced, not ones the text already had
        try:
            genuine = data.count("\ufffd".encode(enc))
        except UnicodeEncodeError:
            genuine = 0
        stats.note_replaced(text.count("\ufffd") - genuine)
    return text


def _check(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise GroundupError(f"input file {p} does not exist; check the path")
    return p


# ---------------------------------------------------------------- WARC

def read_warc(path: str | Path, stats: ReadStats | None = None) -> Iterator[Document]:
    """HTML `response` records of a WARC or WARC.gz file, as documents with `html` set."""
    from warcio.archiveiterator import ArchiveIterator

    p = _check(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    seen = 0
    with open(p, "rb") as f:
        try:
            for record in ArchiveIterator(f):
                doc = _warc_document(record, p, stats) if record.rec_type == "response" else None
                # drain what the record has left, then check it was all there: warcio ends a cut-off
                # gzip member or record quietly, leaving a short payload or a record without a length
                while record.raw_stream.read(1 << 16):
                    pass
                if record.rec_headers.get_header("Content-Length") is None or getattr(record.raw_stream, "limit", 0):
                    _truncated(stats, p, seen, "the last record is cut off")
                    return
                seen += 1
                if doc is None:
                    if record.rec_type == "response":
                        stats.skipped += 1
                    continue
                stats.records += 1
                yield doc
        except Exception as e:  # noqa: BLE001 - warcio raises many types on corrupt input; stop this file only
            _truncated(stats, p, seen, f"{type(e).__name__}: {e}")


def _truncated(stats: ReadStats, p: Path, records: int, why: str) -> None:
    stats.truncated_files.append(str(p))
    stats.note_error(p, f"truncated or corrupt after {records} complete WARC records ({why})")


def _warc_document(record, path: Path, stats: ReadStats) -> Document | None:
    headers = record.rec_headers
    content_type = ""
    if record.http_headers is not None:
        content_type = record.http_headers.get_header("Content-Type") or ""
    payload_type = headers.get_header("WARC-Identified-Payload-Type") or ""
    if not any(t in content_type.lower() or t == payload_type for t in _HTML_TYPES):
        return None
    try:
        data = record.content_stream().read()  # de-chunked and decompressed (Content-Encoding)
    except Exception as e:  # noqa: BLE001 - e.g. an unsupported or broken content encoding: skip this record
        stats.note_error(path, f"record {headers.get_header('WARC-Record-ID')}: payload unreadable ({e})")
        return None
    if not data.strip():
        return None
    http = _CHARSET.search(content_type.encode("latin-1", "replace"))
    in_page = _CHARSET.search(data[:4096])  # <meta charset=...> or <meta http-equiv ... content="...; charset=...">
    declared = tuple(m.group(1).decode("ascii", "replace") for m in (http, in_page) if m)
    html = decode_bytes(data, declared, stats)
    url = headers.get_header("WARC-Target-URI")
    meta = {}
    if date := headers.get_header("WARC-Date"):
        meta["date"] = date
    return Document(text="", id=headers.get_header("WARC-Record-ID") or f"{path}:{stats.records}",
                    url=url, source=str(path), html=html, meta=meta)


# ---------------------------------------------------------------- JSONL

def _open_text_lines(p: Path) -> Iterator[bytes]:
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        yield from f


def read_jsonl(path: str | Path, stats: ReadStats | None = None) -> Iterator[Document]:
    """One document per JSON line, from the field `text` (optional `id`, `url`; others go to meta)."""
    p = _check(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    lineno = 0
    try:
        for lineno, raw in enumerate(_open_text_lines(p), 1):
            if not raw.strip():
                continue
            line = decode_bytes(raw, (), stats)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                stats.skipped += 1
                stats.note_error(p, f"line {lineno}: not JSON ({e.msg})")
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                stats.skipped += 1
                stats.note_error(p, f"line {lineno}: no non-empty string field 'text'")
                continue
            meta = {k: v for k, v in obj.items() if k not in ("text", "id", "url")}
            stats.records += 1
            yield Document(text=obj["text"], id=str(obj.get("id") or f"{p.name}:{lineno}"),
                           url=obj.get("url"), source=str(p), meta=meta)
    except (EOFError, OSError, zlib.error) as e:
        stats.truncated_files.append(str(p))
        stats.note_error(p, f"truncated or corrupt after line {lineno} ({type(e).__name__}: {e})")


# ---------------------------------------------------------------- Parquet

def read_parquet(path: str | Path, stats: ReadStats | None = None) -> Iterator[Document]:
    """FineWeb / FineWeb-Edu parquet rows, streamed one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = _check(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as e:
        stats.truncated_files.append(str(p))
        stats.note_error(p, f"not a readable parquet file ({e})")
        return
    names = set(pf.schema_arrow.names)
    if "text" not in names:
        stats.note_error(p, f"no 'text' column (columns: {', '.join(sorted(names))})")
        return
    wanted = [c for c in ("text", "id", "url", *_FINEWEB_META) if c in names]
    row = 0
    try:
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=wanted)
            for rec in table.to_pylist():
                row += 1
                text = rec.get("text")
                if not isinstance(text, str) or not text.strip():
                    stats.skipped += 1
                    continue
                meta = {k: rec[k] for k in _FINEWEB_META if k in rec and rec[k] is not None}
                stats.records += 1
                yield Document(text=text, id=str(rec.get("id") or f"{p.name}:{row}"), url=rec.get("url"),
                               source=str(p), meta=meta)
    except (pa.ArrowException, OSError) as e:
        stats.truncated_files.append(str(p))
        stats.note_error(p, f"truncated or corrupt after {row} rows ({e})")


# ---------------------------------------------------------------- plain text

def read_text(path: str | Path, split: str = "file", stats: ReadStats | None = None) -> Iterator[Document]:
    """Plain text: `split="file"` one document per file, "line" per line, "blank" per blank-line block."""
    if split not in ("file", "line", "blank"):
        raise GroundupError(f"unknown text split {split!r}; use file, line or blank")
    p = _check(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += 1
    try:
        if split == "file":
            data = (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")).read()
            text = decode_bytes(data, (), stats)
            if text.strip():
                stats.records += 1
                yield Document(text=text, id=p.name, source=str(p))
            else:
                stats.skipped += 1
            return
        block: list[str] = []
        start = 0
        for lineno, raw in enumerate(_open_text_lines(p), 1):
            line = decode_bytes(raw, (), stats).rstrip("\r\n")
            if split == "line":
                if line.strip():
                    stats.records += 1
                    yield Document(text=line, id=f"{p.name}:{lineno}", source=str(p))
                continue
            if line.strip():
                if not block:
                    start = lineno
                block.append(line)
            elif block:
                stats.records += 1
                yield Document(text="\n".join(block), id=f"{p.name}:{start}", source=str(p))
                block = []
        if block:
            stats.records += 1
            yield Document(text="\n".join(block), id=f"{p.name}:{start}", source=str(p))
    except (EOFError, OSError, zlib.error) as e:
        stats.truncated_files.append(str(p))
        stats.note_error(p, f"truncated or corrupt after {stats.records} records ({type(e).__name__}: {e})")


# ---------------------------------------------------------------- dispatch

_SUFFIXES = {
    ".warc": "warc", ".arc": "warc", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".txt": "text", ".text": "text", ".md": "text",
}


def file_kind(path: str | Path) -> str:
    """'warc', 'jsonl', 'parquet' or 'text' from the suffix (".gz" looks one suffix further)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if kind is None:
        raise GroundupError(f"don't know how to read {path}: use .warc(.gz), .jsonl(.gz), .parquet or .txt(.gz)")
    return kind


def read_any(path: str | Path, stats: ReadStats | None = None, text_split: str = "file") -> Iterator[Document]:
    """Read any supported file, choosing the reader by suffix."""
    kind = file_kind(path)
    if kind == "warc":
        return read_warc(path, stats)
    if kind == "jsonl":
        return read_jsonl(path, stats)
    if kind == "parquet":
        return read_parquet(path, stats)
    return read_text(path, text_split, stats)


__all__ = ["ReadStats", "decode_bytes", "file_kind", "read_any", "read_jsonl", "read_parquet", "read_text",
           "read_warc"]
