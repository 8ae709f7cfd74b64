"""The pipeline runner: stages and counts, shards, bad input, parallel = serial, resume after kill -9,
report + funnel chart, the FineWeb stages on the shared WARC samples."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from groundup.data.document import Document
from groundup.data.pipeline import RunOptions, run_pipeline
from groundup.errors import GroundupError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ---- tiny stages: they exercise the runner's control flow (drops, errors, edits) -----------------
class DropSpam:
    name = "spam"

    def apply(self, doc: Document) -> Document | str:
        return "spam:word" if "spam" in doc.text else doc


class Explode:
    name = "explode"

    def apply(self, doc: Document) -> Document | str:
        if "boom" in doc.text:
            raise ValueError("stage bug")
        return doc


class Shout:
    name = "shout"

    def apply(self, doc: Document) -> Document | str:
        doc.text = doc.text.upper()
        return doc


def tiny_stages() -> list:
    return [DropSpam(), Explode()]


def tiny_post() -> list:
    return [Shout()]


def no_stages() -> list:
    return []


def shard_stream(out: Path, split: str = "train") -> list[int]:
    m = json.loads((out / "manifest.json").read_text())
    dt = np.dtype(m["dtype"]).newbyteorder("<")
    return [int(t) for s in m["splits"][split]["shards"] for t in np.fromfile(out / s["file"], dtype=dt)]


def docs_in(stream: list[int], bos: int = 256) -> list[str]:
    out, cur = [], None
    for t in stream:
        if t == bos:
            if cur is not None:
                out.append(bytes(cur).decode())
            cur = []
        else:
            cur.append(t)
    if cur is not None:
        out.append(bytes(cur).decode())
    return out


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"{path.stem}-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_stages_counts_and_shards(tmp_path: Path):
    a = write_jsonl(tmp_path / "a.jsonl", ["hello world", "buy spam now", "boom goes the stage", "second doc"])
    b = write_jsonl(tmp_path / "b.jsonl", ["from file b", "more spam"])
    opts = RunOptions(tokenizer="bytes", workers=1, dedup=False, val_fraction=0.0,
                      stage_factory=tiny_stages, post_factory=tiny_post)
    result = run_pipeline([str(a), str(b)], tmp_path / "out", opts)
    out = tmp_path / "out"
    assert docs_in(shard_stream(out)) == ["HELLO WORLD", "SECOND DOC", "FROM FILE B"]
    m = result["manifest"]
    assert m["documents"] == 3 and m["tokens"] == sum(len(t) + 1 for t in ["hello world", "second doc", "from file b"])
    assert m["tokenizer"]["name"] == "bytes" and m["dtype"] == "uint16"
    assert [s["documents"] for s in m["sources"]] == [2, 1] and [s["documents_read"] for s in m["sources"]] == [4, 2]
    from groundup.data.report import stage_table

    rows = {r["name"]: r for r in stage_table(result["stats"])}
    assert list(rows) == ["read", "spam", "explode", "shout", "tokenize"]
    assert rows["spam"]["in"] == 6 and rows["spam"]["dropped"] == {"spam:word": 2}
    assert rows["explode"]["dropped"] == {"explode:error:ValueError": 1}
    assert rows["tokenize"]["kept"] == 3
    report = (out / "report.md").read_text()
    assert "| spam | 6 | 4 | 2 | spam:word 2 |" in report and "explode:error:ValueError 1" in report
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))


def test_validation_split_by_id_hash(tmp_path: Path):
    from groundup.data.shards import is_validation

    texts = [f"document number {i}" for i in range(200)]
    a = write_jsonl(tmp_path / "a.jsonl", texts)
    opts = RunOptions(tokenizer="bytes", workers=1, dedup=False, val_fraction=0.2, stage_factory=no_stages,
                      post_factory=no_stages)
    m = run_pipeline([str(a)], tmp_path / "out", opts)["manifest"]
    val = docs_in(shard_stream(tmp_path / "out", "val"))
    assert val == [t for i, t in enumerate(texts) if is_validation(f"a-{i}", 0.2)]
    assert 20 < len(val) < 60 and m["splits"]["train"]["documents"] == 200 - len(val)


def test_parallel_workers_give_the_same_shards(tmp_path: Path):
    files = [write_jsonl(tmp_path / f"f{k}.jsonl", [f"file {k} doc {i}" + (" spam" if i % 5 == 0 else "")
                                                    for i in range(40)]) for k in range(4)]
    outs = []
    for w in (1, 2):
        opts = RunOptions(tokenizer="bytes", workers=w, dedup=False, stage_factory=tiny_stages,
                          post_factory=tiny_post)
        run_pipeline([str(f) for f in files], tmp_path / f"out{w}", opts)
        outs.append(shard_stream(tmp_path / f"out{w}") + [-1] + shard_stream(tmp_path / f"out{w}", "val"))
    assert outs[0] == outs[1]
    assert len(docs_in(outs[0][:outs[0].index(-1)])) + len(docs_in(outs[0][outs[0].index(-1) + 1:])) == 4 * 32


def test_bad_input_is_counted_never_a_crash(tmp_path: Path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait, cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    good = gzip.compress(b"".join(json.dumps({"text": f"line {i} " * 20}).encode() + b"\n" for i in range(200)))
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "giant.txt").write_text("word " * 1_000_000)  # one 5 MB line
    (tmp_path / "notjson.jsonl").write_text('{"text": "ok doc"}\nnot json at all\n{"no_text": 1}\n')
    inputs = [str(tmp_path / n) for n in ("empty.txt", "latin1.txt", "cut.jsonl.gz", "giant.txt", "notjson.jsonl")]
    if (DATA / "warc" / "sample-0000.warc.gz").is_file():
        warc = (DATA / "warc" / "sample-0000.warc.gz").read_bytes()
        (tmp_path / "cut.warc.gz").write_bytes(warc[: len(warc) * 2 // 3])
        inputs.append(str(tmp_path / "cut.warc.gz"))
    opts = RunOptions(tokenizer="bytes", workers=1, dedup=False, stage_factory=no_stages, post_factory=no_stages)
    result = run_pipeline(inputs, tmp_path / "out", opts)
    reads = {Path(m["input"]).name: m["read"] for m in result["stats"]["filter"]}
    assert reads["empty.txt"]["records"] == 0
    assert reads["latin1.txt"]["replaced_chars"] > 0
    assert reads["cut.jsonl.gz"]["truncated_files"] and 0 < reads["cut.jsonl.gz"]["records"] < 200
    assert reads["giant.txt"]["records"] == 1
    assert reads["notjson.jsonl"]["records"] == 1 and reads["notjson.jsonl"]["skipped"] == 2
    report = (tmp_path / "out" / "report.md").read_text()
    assert "truncated/corrupt" in report and "| empty.txt | 0 |" in report and "| empty file |" in report
    if "cut.warc.gz" in reads:
        assert reads["cut.warc.gz"]["truncated_files"] and reads["cut.warc.gz"]["records"] > 0
    docs = docs_in(shard_stream(tmp_path / "out") + shard_stream(tmp_path / "out", "val"))
    assert any(d.startswith("word word") and len(d) == 5_000_000 for d in docs)
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_other_run_in_same_out_is_refused(tmp_path: Path):
    a = write_jsonl(tmp_path / "a.jsonl", ["one", "two"])
    opts = RunOptions(tokenizer="bytes", workers=1, dedup=False, stage_factory=no_stages, post_factory=no_stages)
    run_pipeline([str(a)], tmp_path / "out", opts)
    again = run_pipeline([str(a)], tmp_path / "out", opts)  # same run: everything is already done
    assert again["stats"]["resumed"] and again["manifest"]["documents"] == 2
    b = write_jsonl(tmp_path / "b.jsonl", ["three"])
    with pytest.raises(GroundupError, match="different run"):
        run_pipeline([str(a), str(b)], tmp_path / "out", opts)
    opts.restart = True
    assert run_pipeline([str(a), str(b)], tmp_path / "out", opts)["manifest"]["documents"] == 3


def test_unknown_input_suffix_is_refused_before_work(tmp_path: Path):
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(GroundupError, match="don't know how to read"):
        run_pipeline([str(tmp_path / "x.pdf")], tmp_path / "out", RunOptions(tokenizer="bytes"))
    assert not (tmp_path / "out").exists()


def test_dedup_is_global_across_files_and_workers(tmp_path: Path):
    import random

    rng = random.Random(5)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    base = [" ".join(rng.choice(vocab) for _ in range(120)) for _ in range(12)]  # dedup normalizes digits: no numbers
    w = base[3].split()
    near = " ".join(w[:60] + ["changed"] + w[61:])  # one word of 120 changed: Jaccard ~0.92
    a = write_jsonl(tmp_path / "a.jsonl", base[:6])
    b = write_jsonl(tmp_path / "b.jsonl", base[6:] + [base[1], base[2].upper() + "!!", near])
    opts = RunOptions(tokenizer="bytes", workers=2, val_fraction=0.0, stage_factory=no_stages,
                      post_factory=no_stages)
    result = run_pipeline([str(a), str(b)], tmp_path / "out", opts)
    assert docs_in(shard_stream(tmp_path / "out")) == base  # the first copy of each is kept, in input order
    counts = result["stats"]["dedup"]["counts"]
    assert counts["in"] == 15 and counts["kept"] == 12
    assert counts["dropped"] == {"dedup:exact": 2, "dedup:near": 1}
    assert "| dedup | 15 | 12 | 3 |" in (tmp_path / "out" / "report.md").read_text()


def _kept_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for f in sorted((out / "work" / "filter").glob("*.docs.jsonl.gz"))
            for line in gzip.open(f, "rt")]


def test_datatrove_local_executor_runs_the_same_stages(tmp_path: Path):
    pytest.importorskip("datatrove", reason="datatrove not installed (scale-out is optional)")
    from groundup.data.scaleout import run_local

    files = [str(write_jsonl(tmp_path / f"f{k}.jsonl", [f"file {k} doc {i}" + (" spam" if i % 3 == 0 else "")
                                                        + (" boom" if i == 4 else "") for i in range(9)]))
             for k in range(3)]
    written = run_local(files, tmp_path / "dt", tasks=2, workers=1, factory=tiny_stages)
    assert len(written) == 2  # one output per datatrove task
    theirs = [json.loads(line) for f in written for line in gzip.open(f, "rt")]
    opts = RunOptions(tokenizer="bytes", workers=1, dedup=False, stage_factory=tiny_stages, post_factory=no_stages)
    run_pipeline(files, tmp_path / "ours", opts)
    assert sorted(d["id"] for d in theirs) == sorted(_kept_ids(tmp_path / "ours"))
    assert len(theirs) == 3 * 5  # 9 docs per file, 3 with spam, 1 boom
    # the datatrove output is pipeline input: dedup + tokenize it
    m = run_pipeline([str(tmp_path / "dt" / "documents")], tmp_path / "shards",
                     RunOptions(tokenizer="bytes", workers=1, dedup=False, stage_factory=no_stages,
                                post_factory=no_stages))
    assert m["manifest"]["documents"] == 15


def _shard_bytes(out: Path) -> dict[str, bytes]:
    m = json.loads((out / "manifest.json").read_text())
    return {s["file"]: (out / s["file"]).read_bytes() for sp in m["splits"].values() for s in sp["shards"]}


def test_run_killed_with_sigkill_resumes_to_the_same_output(tmp_path: Path):
    inputs = [str(DATA / "warc" / n) for n in ("sample-0000.warc.gz", "example.warc.gz", "sample-0001.warc.gz")]
    if not all(Path(p).is_file() for p in inputs):
        pytest.skip(f"shared WARC samples not found under {DATA}")
    ref = run_pipeline(inputs, tmp_path / "ref", RunOptions(tokenizer="bytes", workers=1, val_fraction=0.05))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "groundup", "data", "run", *inputs, "--out", str(out), "--workers", "1",
           "--tokenizer", "bytes", "--val-fraction", "0.05"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "work" / "filter" / "00000.json").exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the first task never finished"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists() and not (out / "work" / "filter" / "00002.json").exists()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and "already done" in done.stderr
    m_ref = ref["manifest"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["documents"] == m_ref["documents"] > 0 and m["tokens"] == m_ref["tokens"]
    assert m["splits"] == m_ref["splits"] and m["sources"] == m_ref["sources"]
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "ref")
    assert not list(out.rglob("*.tmp"))


def test_datatrove_executor_with_the_fineweb_stages_keeps_what_we_keep(tmp_path: Path):
    pytest.importorskip("datatrove", reason="datatrove not installed (scale-out is optional)")
    files = [DATA / "warc" / "sample-0001.warc.gz", DATA / "warc" / "cc-main-2020-34-sample.warc.gz"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"shared WARC samples not found under {DATA}")
    from groundup.data.pipeline import _Factory
    from groundup.data.scaleout import run_local

    written = run_local([str(f) for f in files], tmp_path / "dt", tasks=2, workers=1, factory=_Factory(("en",), 0))
    theirs = sorted(json.loads(line)["id"] for f in written for line in gzip.open(f, "rt"))
    run_pipeline([str(f) for f in files], tmp_path / "ours", RunOptions(tokenizer="bytes", workers=1, dedup=False))
    ours = sorted(_kept_ids(tmp_path / "ours"))
    assert theirs == ours and len(ours) > 5


def test_smollm2_shards_feed_the_dataloader(tmp_path: Path, smollm2_path):
    from groundup.data.loader import DataLoader
    from groundup.data.shards import load_tokenizer

    texts = [f"Paragraph {i}: the committee met on Tuesday and agreed to repaint the library." for i in range(60)]
    a = write_jsonl(tmp_path / "a.jsonl", texts[:30])
    b = write_jsonl(tmp_path / "b.jsonl", texts[30:])
    opts = RunOptions(tokenizer="smollm2-135m-instruct", workers=2, dedup=False, val_fraction=0.1,
                      stage_factory=no_stages, post_factory=no_stages)
    m = run_pipeline([str(a), str(b)], tmp_path / "out", opts)["manifest"]
    tok, info = load_tokenizer("smollm2-135m-instruct")
    assert m["dtype"] == "uint16" and m["tokenizer"]["sha256"] == info.sha256
    stream = shard_stream(tmp_path / "out")
    assert stream[0] == info.bos_id
    first = stream[1:stream.index(info.bos_id, 1)]
    assert tok.decode(first) in texts
    assert m["tokens"] == sum(len(tok.encode(t, add_bos=False)) + 1 for t in texts)
    dl = DataLoader(tmp_path / "out", batch_size=2, seq_len=16, seed=0)
    x, y = next(iter(dl))
    assert x.shape == (2, 16) and int(x.max()) < info.vocab_size


def test_filters_none_keeps_curated_text_but_still_replaces_pii(tmp_path: Path):
    texts = ["Short verse line\nAnother line", "Write to jane.doe@example.com for the parish records"]
    a = write_jsonl(tmp_path / "a.jsonl", texts)
    opts = RunOptions(tokenizer="bytes", workers=1, dedup=False, val_fraction=0.0, filters="none")
    result = run_pipeline([str(a)], tmp_path / "out", opts)
    docs = docs_in(shard_stream(tmp_path / "out"))
    assert docs[0] == texts[0] and len(docs) == 2
    assert "jane.doe@example.com" not in docs[1] and docs[1].startswith("Write to ")
    from groundup.data.report import stage_table

    assert [r["name"] for r in stage_table(result["stats"])] == ["read", "pii", "tokenize"]
