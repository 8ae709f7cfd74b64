"""Readers: WARC / JSONL / Parquet / text into Documents, and bad input that must not stop a pipeline."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from groundup.data.readers import ReadStats, file_kind, read_any, read_jsonl, read_parquet, read_text, read_warc
from groundup.errors import GroundupError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(rel: str) -> Path:
    p = DATA / rel
    if not p.is_file():
        pytest.skip(f"shared data file {p} is missing (see shared/data/SOURCES.md)")
    return p


# ---------------------------------------------------------------- WARC

@pytest.mark.parametrize("name, responses", [("sample-0000.warc.gz", 22), ("sample-0001.warc.gz", 15),
                                             ("cc-main-2020-34-sample.warc.gz", 16)])
def test_warc_html_responses_become_documents(name, responses):
    # SOURCES.md lists the record types of each sample; every response there is an HTML page
    stats = ReadStats()
    docs = list(read_warc(shared(f"warc/{name}"), stats))
    assert len(docs) == responses == stats.records
    assert stats.truncated_files == [] and stats.error_count == 0
    for d in docs:
        assert d.text == "" and d.html and "<" in d.html
        assert d.id.startswith("<urn:uuid:") and d.url.startswith("http")
        assert d.meta["date"].startswith("20")
    assert len({d.id for d in docs}) == len(docs)


def test_warc_declared_charsets_decode_cleanly():
    # this crawl excerpt has gb2312 / gbk / windows-1251 / iso-8859-1 pages, declared in headers or <meta>
    stats = ReadStats()
    docs = {d.url: d for d in read_warc(shared("warc/cc-main-2020-34-sample.warc.gz"), stats)}
    assert stats.replaced_chars == 0
    assert any("\u4e00" <= c <= "\u9fff" for c in docs["http://037426.cn/"].html)  # gb2312 -> Chinese
    assert any("\u0400" <= c <= "\u04ff" for c in docs["http://01spb.ru/company/"].html)  # cp1251 -> Cyrillic


def test_warc_cut_off_gzip_stops_cleanly(tmp_path):
    full = list(read_warc(shared("warc/sample-0000.warc.gz")))
    data = shared("warc/sample-0000.warc.gz").read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: len(data) // 2])
    stats = ReadStats()
    docs = list(read_warc(cut, stats))
    assert 0 < len(docs) < len(full)
    assert [(d.id, d.html) for d in docs] == [(d.id, d.html) for d in full[: len(docs)]]
    assert stats.truncated_files == [str(cut)]
    assert stats.error_count == 1 and "truncated" in stats.errors[0]


def test_warc_garbage_in_the_middle_stops_cleanly(tmp_path):
    data = shared("warc/cc-main-2020-34-sample.warc.gz").read_bytes()
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 100 + data[len(data) // 2:])
    stats = ReadStats()
    docs = list(read_warc(bad, stats))  # must not raise
    assert len(docs) < 16 and stats.truncated_files == [str(bad)]


def test_uncompressed_warc_cut_mid_record_drops_that_record(tmp_path):
    raw = gzip.decompress(shared("warc/sample-0001.warc.gz").read_bytes())
    full = list(read_warc(shared("warc/sample-0001.warc.gz")))
    last = raw.rfind(b"WARC-Type: response")
    cut = tmp_path / "cut.warc"
    cut.write_bytes(raw[: last + 2000])  # the last response's payload is cut short
    stats = ReadStats()
    docs = list(read_warc(cut, stats))
    assert len(docs) == len(full) - 1
    assert stats.truncated_files == [str(cut)]


def test_empty_warc_yields_nothing(tmp_path):
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    stats = ReadStats()
    assert list(read_warc(empty, stats)) == [] and stats.records == 0


# ---------------------------------------------------------------- JSONL

def test_jsonl_shared_c4_demo():
    docs = list(read_jsonl(shared("llamafactory/c4_demo.jsonl")))
    assert len(docs) == 300  # SOURCES.md: 300 records with field `text`
    assert all(d.text.strip() and d.html is None for d in docs)
    assert docs[0].id == "c4_demo.jsonl:1" and docs[-1].id == "c4_demo.jsonl:300"


def test_jsonl_bad_lines_are_counted_not_fatal(tmp_path):
    p = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"text": "first document", "id": "a", "url": "https://a.example/", "dump": "CC-X"}).encode(),
        b"{not json",
        json.dumps({"title": "no text field"}).encode(),
        b"",
        json.dumps({"text": "caf\u00e9 ok"}).encode()[:-2] + b'\xff"}',  # invalid UTF-8 inside the string
        json.dumps({"text": "last", "id": 7}).encode(),
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    stats = ReadStats()
    docs = list(read_jsonl(p, stats))
    assert [d.id for d in docs] == ["a", "mixed.jsonl:5", "7"]
    assert docs[0].url == "https://a.example/" and docs[0].meta == {"dump": "CC-X"}
    assert "\ufffd" in docs[1].text and stats.replaced_chars == 1 and stats.docs_with_replacements == 1
    assert stats.skipped == 2 and stats.error_count == 2
    assert "line 2" in stats.errors[0] and "line 3" in stats.errors[1]


def test_jsonl_gz_truncated(tmp_path):
    p = tmp_path / "docs.jsonl.gz"
    body = "".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(2000)).encode()
    packed = gzip.compress(body)
    p.write_bytes(packed[: len(packed) // 2])
    stats = ReadStats()
    docs = list(read_any(p, stats))
    assert 0 < len(docs) < 2000 and stats.truncated_files == [str(p)]
    assert docs[-1].text == f"document number {len(docs) - 1} " * 20  # every yielded line is whole


# ---------------------------------------------------------------- Parquet

def _fineweb_table(n: int):
    import pyarrow as pa

    return pa.table({
        "text": [f"text {i}" if i % 7 else "" for i in range(n)],
        "id": [f"<urn:uuid:{i}>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://site{i}.example/" for i in range(n)],
        "date": ["2024-02-20T00:00:00Z"] * n,
        "language": ["en"] * n,
        "language_score": [0.9] * n,
        "token_count": list(range(n)),
        "score": [2.5] * n,
        "int_score": [3] * n,
    })


def test_parquet_fineweb_schema_streams_by_row_group(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    p = tmp_path / "fw.parquet"
    pq.write_table(_fineweb_table(100), p, row_group_size=10)
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, **kw: reads.append(i) or original(self, i, **kw))
    stats = ReadStats()
    it = read_parquet(p, stats)
    first = next(it)
    assert reads == [0]  # one row group read to yield the first document
    docs = [first, *it]
    assert reads == list(range(10))
    assert len(docs) == 100 - 15 and stats.skipped == 15  # rows 0, 7, 14, ... have empty text
    d = docs[0]
    assert (d.text, d.id, d.url) == ("text 1", "<urn:uuid:1>", "https://site1.example/")
    assert d.meta == {"dump": "CC-MAIN-2024-10", "date": "2024-02-20T00:00:00Z", "language": "en",
                      "language_score": 0.9, "token_count": 1, "score": 2.5, "int_score": 3}


def test_parquet_unreadable_file_is_reported(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    stats = ReadStats()
    assert list(read_any(p, stats)) == [] and stats.truncated_files == [str(p)]


# ---------------------------------------------------------------- plain text

def test_text_splits(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"para one line a\npara one line b\n\n\npara two\n\xffbad byte\n")
    stats = ReadStats()
    assert [d.text for d in read_text(p, "file")] == [p.read_text(errors="replace")]
    assert [d.text for d in read_text(p, "line", stats)] == [
        "para one line a", "para one line b", "para two", "\ufffdbad byte"]
    assert stats.replaced_chars == 1
    blocks = list(read_text(p, "blank"))
    assert [d.text for d in blocks] == ["para one line a\npara one line b", "para two\n\ufffdbad byte"]
    assert [d.id for d in blocks] == ["t.txt:1", "t.txt:5"]  # file:first line of the block


def test_text_empty_file_and_giant_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    stats = ReadStats()
    assert list(read_any(empty, stats)) == [] and stats.skipped == 1
    giant = tmp_path / "giant.txt"
    giant.write_text("word " * 1_000_000 + "\nsecond\n")
    docs = list(read_text(giant, "line"))
    assert len(docs) == 2 and len(docs[0].text) == 5_000_000


def test_shared_wiki_demo_one_article_per_line():
    docs = list(read_text(shared("llamafactory/wiki_demo.txt"), "line"))
    assert len(docs) == 30  # SOURCES.md: 30 lines = 30 articles


# ---------------------------------------------------------------- dispatch

@pytest.mark.parametrize("name, kind", [("a.warc.gz", "warc"), ("a.warc", "warc"), ("a.jsonl", "jsonl"),
                                        ("a.jsonl.gz", "jsonl"), ("a.parquet", "parquet"), ("a.txt", "text"),
                                        ("a.txt.gz", "text")])
def test_file_kind(name, kind):
    assert file_kind(name) == kind


def test_bad_paths_raise_user_errors(tmp_path):
    with pytest.raises(GroundupError, match="don't know how to read"):
        file_kind(tmp_path / "x.docx")
    with pytest.raises(GroundupError, match="does not exist"):
        list(read_any(tmp_path / "missing.jsonl"))
