"""The pipeline's per-file tasks, run in worker processes: filter (phase 1) and tokenize (phase 3).

Each task handles one input file and commits its result with a marker JSON written last and
atomically; a task whose marker exists is done and is never run again, so a killed run resumes
without duplicating or losing documents. Output written before the marker (documents, signatures,
shards) goes to `.tmp` names first and is renamed into place, and a re-run task rewrites the
same names with the same content.

Phase 1 `filter_task`: read the file (readers.read_any) -> each stage in order -> the kept
documents to `work/filter/NNNNN.docs.jsonl.gz`, and (with dedup) their dedup keys (dedup.py's
`dedup_key`: exact-text hash and MinHash LSH band buckets, the costly half of dedup) streamed to
`NNNNN.exact.bin` (16 bytes a row) / `NNNNN.bands.bin` (uint64 little-endian, one row of band
buckets per document), row i = document i.
Phase 3 `tokenize_task`: the kept documents minus those dedup dropped -> post-dedup stages (PII)
-> BOS + tokens -> train/val shards.

Every stage's documents in / kept / dropped (by reason) and its seconds are counted; a stage
that raises drops that document with reason "<stage>:error:<Exception>" instead of stopping
the run, and a reader that fails ends that file, noted in the task's read stats.
"""
from __future__ import annotations

import gzip
import json
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from groundup.data.document import Document
from groundup.data.shards import write_json_atomic

# set once per worker process by `init_worker`
_STATE: dict[str, Any] = {}


def init_worker(tokenizer: Any, stage_factory: Callable[[], list], post_factory: Callable[[], list],
                dedup: bool) -> None:
    """Worker initializer: keep the tokenizer and the stage factories for the tasks that follow."""
    _STATE.clear()
    _STATE.update(tokenizer=tokenizer, stage_factory=stage_factory, post_factory=post_factory, dedup=dedup)


def _stages(key: str) -> list:
    cache = _STATE.setdefault("built", {})
    if key not in cache:
        cache[key] = _STATE["stage_factory" if key == "pre" else "post_factory"]()
    return cache[key]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Linux's VmHWM (reset when a process execs, unlike ru_maxrss, which a spawned worker inherits
    from its parent); ru_maxrss (KiB) where /proc is missing.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def new_counts() -> dict[str, Any]:
    return {"in": 0, "kept": 0, "dropped": {}, "seconds": 0.0}


def apply_stages(doc: Document, stages: list, counts: dict[str, dict]) -> Document | None:
    """Run `doc` through `stages`, counting into `counts`; the kept document or None."""
    for stage in stages:
        c = counts.setdefault(stage.name, new_counts())
        c["in"] += 1
        t0 = time.perf_counter()
        try:
            result = stage.apply(doc)
        except Exception as ex:  # noqa: BLE001 - one bad document must not stop the run
            result = f"{stage.name}:error:{type(ex).__name__}"
        c["seconds"] += time.perf_counter() - t0
        if isinstance(result, str):
            c["dropped"][result] = c["dropped"].get(result, 0) + 1
            return None
        c["kept"] += 1
        doc = result
    return doc


def _doc_record(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "text": doc.text, "url": doc.url, "source": doc.source, "meta": doc.meta}


def filter_task(task: int, path: str, work: str, text_split: str) -> dict[str, Any]:
    """Phase 1 for one input file; returns (and commits) the task's marker."""
    from groundup.data.readers import ReadStats, read_any

    wdir = Path(work) / "filter"
    stem = wdir / f"{task:05d}"
    key_of = None
    if _STATE["dedup"]:
        from groundup.data.dedup import dedup_key as key_of
    stages = _stages("pre")
    counts: dict[str, dict] = {}
    read = ReadStats()
    read_counts = counts.setdefault("read", new_counts())
    keys = KeyWriter(stem) if key_of is not None else None
    kept = 0
    t_task = time.perf_counter()
    docs_tmp = stem.with_name(stem.name + ".docs.jsonl.gz.tmp")
    with gzip.open(docs_tmp, "wt", encoding="utf-8", compresslevel=3) as out:
        it = read_any(path, stats=read, text_split=text_split)
        while True:
            t0 = time.perf_counter()
            try:
                doc = next(it)
            except StopIteration:
                read_counts["seconds"] += time.perf_counter() - t0
                break
            except Exception as ex:  # noqa: BLE001 - a reader bug or unreadable file ends this file only
                read_counts["seconds"] += time.perf_counter() - t0
                read.note_error(path, f"reader failed: {type(ex).__name__}: {ex}")
                read.truncated_files.append(path)
                break
            read_counts["seconds"] += time.perf_counter() - t0
            read_counts["in"] += 1
            read_counts["kept"] += 1
            doc = apply_stages(doc, stages, counts)
            if doc is None:
                continue
            if key_of is not None:
                t0 = time.perf_counter()
                keys.add(key_of(doc.text))
                c = counts.setdefault("minhash", new_counts())
                c["in"] += 1
                c["kept"] += 1
                c["seconds"] += time.perf_counter() - t0
            out.write(json.dumps(_doc_record(doc), ensure_ascii=False) + "\n")
            kept += 1
    read_counts["dropped"] = {"read:skipped": read.skipped} if read.skipped else {}
    read_counts["in"] += read.skipped
    if keys is not None:
        keys.close()
    os.replace(docs_tmp, stem.with_name(stem.name + ".docs.jsonl.gz"))
    marker = {"task": task, "input": path, "kept": kept, "stages": counts, "read": asdict(read),
              "seconds": time.perf_counter() - t_task, "peak_rss_mb": peak_rss_mb(), "pid": os.getpid()}
    write_json_atomic(stem.with_name(stem.name + ".json"), marker)
    return marker


class KeyWriter:
    """Streams dedup keys to `<stem>.exact.bin` / `<stem>.bands.bin` (via .tmp names, renamed on close)."""

    def __init__(self, stem: Path) -> None:
        self.paths = [stem.with_name(stem.name + ext) for ext in (".exact.bin", ".bands.bin")]
        self.files = [open(p.with_name(p.name + ".tmp"), "wb", buffering=1 << 20) for p in self.paths]

    def add(self, key: Any) -> None:
        import numpy as np

        self.files[0].write(key.exact)
        self.files[1].write(np.asarray(key.bands, dtype="<u8").tobytes())

    def close(self) -> None:
        for f, p in zip(self.files, self.paths):
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(p.with_name(p.name + ".tmp"), p)


def tokenize_task(task: int, path: str, work: str, out: str, dropped: list[int], dtype: str, val_fraction: float,
                  shard_tokens: int) -> dict[str, Any]:
    """Phase 3 for one task's kept documents; returns (and commits) the task's marker."""
    from groundup.data.document import Document as Doc
    from groundup.data.shards import ShardWriter, document_ids, is_validation

    tok = _STATE["tokenizer"]
    stages = _stages("post")
    stem = Path(work) / "filter" / f"{task:05d}"
    outdir = Path(out)
    for split in ("train", "val"):  # a killed earlier try may have left some of this task's shards
        for old in (outdir / split).glob(f"{task:05d}-*"):
            old.unlink()
    writers = {s: ShardWriter(outdir / s, f"{task:05d}", dtype, shard_tokens) for s in ("train", "val")}
    counts: dict[str, dict] = {}
    tok_counts = new_counts()
    skip = set(dropped)
    tokens = 0
    t_task = time.perf_counter()
    try:
        with gzip.open(stem.with_name(stem.name + ".docs.jsonl.gz"), "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i in skip:
                    continue
                rec = json.loads(line)
                doc = apply_stages(Doc(text=rec["text"], id=rec["id"], url=rec["url"], source=rec["source"],
                                       meta=rec["meta"]), stages, counts)
                if doc is None:
                    continue
                t0 = time.perf_counter()
                ids = document_ids(tok, doc.text)
                tok_counts["seconds"] += time.perf_counter() - t0
                tok_counts["in"] += 1
                tok_counts["kept"] += 1
                tokens += len(ids)
                writers["val" if is_validation(doc.id, val_fraction) else "train"].add(ids)
        shards = {s: w.close() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    counts["tokenize"] = tok_counts
    marker = {"task": task, "input": path, "shards": shards, "tokens": tokens, "stages": counts,
              "seconds": time.perf_counter() - t_task, "peak_rss_mb": peak_rss_mb(), "pid": os.getpid()}
    write_json_atomic(Path(work) / "tokenize" / f"{task:05d}.json", marker)
    return marker
