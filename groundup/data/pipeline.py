"""The pipeline runner: input files -> stages -> global dedup -> PII -> token shards, in parallel, resumable.

`run_pipeline(inputs, out, options)` runs four phases over one task per input file:

1. filter (worker processes, one file per task): read -> URL filter -> extract -> language ->
   quality filters; kept documents and their dedup keys (exact-text hash, MinHash LSH band
   buckets) go to `out/work/filter/`.
2. dedup (this process): exact-text duplicates and MinHash near-duplicates are decided across
   all files at once, in input order (the first copy is kept), with dedup.DedupIndex;
   `work/dedup.json`. Only the keys of kept documents are held in memory, not the documents.
3. tokenize (worker processes): the survivors -> PII replacement -> BOS + tokens -> train/val
   shards (shards.py).
4. manifest.json, report.md and funnel.png (report.py).

Memory stays bounded whatever the input size: every phase streams documents one at a time;
only the dedup index grows with the number of documents. Resuming: `out/run.json` records the
inputs (path, size, mtime) and the options; running the same command again skips every task
whose marker exists (workers.py) and redoes the rest. A different run in the same `--out` is
refused unless `restart=True`, which clears the previous run's files first.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from groundup.data import workers
from groundup.data.shards import write_json_atomic
from groundup.errors import GroundupError

RUN_FILE = "run.json"
RUN_FORMAT = "groundup-data-run/1"
EXACT_BYTES = 16  # dedup.exact_hash digest size
TEXT_SPLITS = {"file": "file", "line": "line", "paragraph": "blank", None: "file"}


@dataclass
class RunOptions:
    tokenizer: str = "smollm2-135m-instruct"
    workers: int | None = None  # None: the CPU count
    languages: tuple[str, ...] = ("en",)
    val_fraction: float = 0.005
    dedup: bool = True
    text_mode: str | None = None  # plain text: "file" (default), "line" or "paragraph"
    filters: str = "fineweb"  # "none": no per-document filters before dedup (curated text)
    restart: bool = False
    shard_tokens: int = 50_000_000
    # module-level callables (they travel to worker processes); None = the FineWeb stages
    stage_factory: Callable[[], list] | None = field(default=None, repr=False)
    post_factory: Callable[[], list] | None = field(default=None, repr=False)


def fineweb_stages(languages: tuple[str, ...] = ("en",)) -> tuple[list, list]:
    """(before dedup, after dedup): stages.default_stages split at PII, which FineWeb runs after dedup."""
    from groundup.data.stages import default_stages

    stages = default_stages(languages=languages)
    cut = next((i for i, s in enumerate(stages) if s.name.startswith("pii")), len(stages))
    return stages[:cut], stages[cut:]


class _Factory:
    """Picklable `() -> stages` for one half of `fineweb_stages(languages)`; `filters="none"` keeps only
    the after-dedup half (PII), for curated text that web-page filters would wrongly drop."""

    def __init__(self, languages: tuple[str, ...], half: int, filters: str = "fineweb") -> None:
        self.languages, self.half, self.filters = tuple(languages), half, filters

    def __call__(self) -> list:
        if self.filters == "none" and self.half == 0:
            return []
        return fineweb_stages(self.languages)[self.half]


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, directories walked for readable files (sorted; .json skipped there); unknown suffixes
    are an error for files named explicitly."""
    from groundup.data.readers import file_kind

    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = []
            for f in sorted(p.rglob("*")):
                # in a directory, a lone .json is metadata (pull's meta.json, datatrove's logs), not data
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() != ".json":
                    try:
                        file_kind(f)
                        found.append(f)
                    except GroundupError:
                        continue
            if not found:
                raise GroundupError(f"directory {p} holds no .warc(.gz), .jsonl(.gz), .parquet or .txt files")
            files += found
        elif p.is_file():
            file_kind(p)  # unknown suffix: a one-line error before any work starts
            files.append(p)
        else:
            raise GroundupError(f"input {item} does not exist; check the path")
    return [f.resolve() for f in files]


def _identity(files: list[Path], opts: RunOptions, stage_names: list[str]) -> dict[str, Any]:
    return {"format": RUN_FORMAT,
            "inputs": [{"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files],
            "options": {"tokenizer": opts.tokenizer, "languages": list(opts.languages), "dedup": opts.dedup,
                        "val_fraction": opts.val_fraction, "text_mode": opts.text_mode,
                        "shard_tokens": opts.shard_tokens, "stages": stage_names}}


def _clear(out: Path) -> None:
    for name in ("work", "train", "val"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (RUN_FILE, "manifest.json", "report.md", "funnel.png", "stats.json"):
        (out / name).unlink(missing_ok=True)


def _prepare(out: Path, identity: dict[str, Any], restart: bool) -> bool:
    """Create or resume `out`; True when resuming."""
    run_file = out / RUN_FILE
    if restart:
        _clear(out)
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text())
        except ValueError:
            old = None
        if old != identity:
            raise GroundupError(f"{out} holds a different run (other inputs, input files changed, or other options); "
                                "use another --out, or --restart to discard it")
        return True
    if out.exists() and any(out.iterdir()):
        raise GroundupError(f"{out} exists and is not a pipeline output; choose an empty or new --out")
    for sub in ("work/filter", "work/tokenize", "train", "val"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_file, identity)
    return False


def _run_tasks(fn: Callable, jobs: list[tuple], n_workers: int, init: tuple, log: Callable[[str], None],
               what: str) -> list[dict]:
    """Run `fn(*job)` for each job, in-process for one worker, else in a spawn pool; results in job order."""
    results: dict[int, dict] = {}
    if not jobs:
        return []
    if n_workers <= 1:
        workers.init_worker(*init)
        for k, job in enumerate(jobs):
            results[k] = fn(*job)
            log(_task_line(what, len(results), len(jobs), results[k]))
        return [results[k] for k in range(len(jobs))]
    pool = ProcessPoolExecutor(max_workers=min(n_workers, len(jobs)), mp_context=get_context("spawn"),
                               initializer=workers.init_worker, initargs=init)
    try:
        futures = {pool.submit(fn, *job): k for k, job in enumerate(jobs)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            log(_task_line(what, len(results), len(jobs), results[futures[fut]]))
    except BrokenProcessPool:
        raise GroundupError(f"a worker process died during {what} (out of memory?); run the same command "
                            "again to resume from the finished files") from None
    except BaseException:  # Ctrl-C or an error: stop now; finished tasks are committed, the rest redone later
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [results[k] for k in range(len(jobs))]


def _task_line(what: str, done: int, total: int, marker: dict) -> str:
    name = Path(marker.get("input", "")).name or f"task {marker['task']}"
    detail = f"{marker['kept']:,} kept" if "kept" in marker else f"{marker['tokens']:,} tokens"
    return f"{what} {done}/{total}: {name}: {detail} ({marker['seconds']:.1f}s)"


def decide_duplicates(filter_dir: Path, n_tasks: int) -> dict[str, Any]:
    """Phase 2: walk every task's dedup keys in input order through one dedup.DedupIndex.

    Returns {"dropped": {task: [rows]}, "counts": {in, kept, dropped: {reason: n}}} (JSON-ready).
    """
    import numpy as np

    from groundup.data.dedup import DedupIndex, DedupKey

    index = DedupIndex()
    dropped: dict[str, list[int]] = {}
    reasons: dict[str, int] = {}
    total = 0
    for task in range(n_tasks):
        stem = Path(filter_dir) / f"{task:05d}"
        exact = np.fromfile(stem.with_name(stem.name + ".exact.bin"), dtype=np.uint8).reshape(-1, EXACT_BYTES)
        n = len(exact)
        bands = np.memmap(stem.with_name(stem.name + ".bands.bin"), dtype="<u8", mode="r") if n else np.zeros(0)
        bands = bands.reshape(n, -1) if n else bands
        total += n
        for start in range(0, n, 1 << 16):  # a block of rows at a time: memory stays flat
            block = bands[start:start + (1 << 16)].tolist()
            for j, row in enumerate(block):
                i = start + j
                why = index.check(DedupKey(exact[i].tobytes(), tuple(row)))
                if why is not None:
                    dropped.setdefault(str(task), []).append(i)
                    reasons[f"dedup:{why}"] = reasons.get(f"dedup:{why}", 0) + 1
    kept = total - sum(reasons.values())
    return {"dropped": dropped, "counts": {"in": total, "kept": kept, "dropped": reasons}}


def run_pipeline(inputs: list[str], out: str | os.PathLike, opts: RunOptions | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns {"manifest", "report", "stats"}."""
    from groundup.data.report import write_report
    from groundup.data.shards import dtype_for_vocab, load_tokenizer, write_manifest

    opts = opts or RunOptions()
    log = log or (lambda s: None)
    if not 0 <= opts.val_fraction < 1:
        raise GroundupError(f"--val-fraction must be in [0, 1), got {opts.val_fraction}")
    if opts.text_mode not in TEXT_SPLITS:
        raise GroundupError(f"unknown text mode {opts.text_mode!r}; use file, line or paragraph")
    t_start = time.perf_counter()
    out = Path(out)
    files = expand_inputs(inputs)
    if opts.filters not in ("fineweb", "none"):
        raise GroundupError(f"unknown filters {opts.filters!r}; use fineweb or none")
    pre_factory = opts.stage_factory or _Factory(opts.languages, 0, opts.filters)
    post_factory = opts.post_factory or _Factory(opts.languages, 1, opts.filters)
    names = [s.name for s in pre_factory()] + ["|"] + [s.name for s in post_factory()]
    resumed = _prepare(out, _identity(files, opts, names), opts.restart)
    tok, info = load_tokenizer(opts.tokenizer)
    dtype = dtype_for_vocab(info.vocab_size)
    n_workers = max(1, opts.workers or os.cpu_count() or 1)
    init = (tok, pre_factory, post_factory, opts.dedup)
    work = out / "work"
    log(f"{'resuming' if resumed else 'starting'}: {len(files)} input file(s), {n_workers} worker(s), "
        f"tokenizer {info.name} ({dtype})")

    # phase 1: filter
    t0 = time.perf_counter()
    markers = {}
    todo = []
    for k, f in enumerate(files):
        m = work / "filter" / f"{k:05d}.json"
        if m.exists():
            markers[k] = json.loads(m.read_text())
        else:
            todo.append((k, str(f), str(work), TEXT_SPLITS[opts.text_mode]))
    if markers:
        log(f"filter: {len(markers)} of {len(files)} file(s) already done")
    for marker in _run_tasks(workers.filter_task, todo, n_workers, init, log, "filter"):
        markers[marker["task"]] = marker
    filter_markers = [markers[k] for k in range(len(files))]
    filter_seconds = time.perf_counter() - t0

    # phase 2: global dedup
    t0 = time.perf_counter()
    dedup_file = work / "dedup.json"
    if not opts.dedup:
        dedup = {"dropped": {}, "counts": None}
    elif dedup_file.exists():
        dedup = json.loads(dedup_file.read_text())
    else:
        dedup = decide_duplicates(work / "filter", len(files))
        dedup["seconds"] = time.perf_counter() - t0
        write_json_atomic(dedup_file, dedup)
        log(f"dedup: {sum(len(v) for v in dedup['dropped'].values()):,} duplicate(s) dropped "
            f"({dedup['seconds']:.1f}s)")

    # phase 3: tokenize
    t0 = time.perf_counter()
    tmarkers = {}
    todo = []
    for k in range(len(files)):
        m = work / "tokenize" / f"{k:05d}.json"
        if m.exists():
            tmarkers[k] = json.loads(m.read_text())
        else:
            todo.append((k, str(files[k]), str(work), str(out), dedup["dropped"].get(str(k), []), dtype,
                         opts.val_fraction, opts.shard_tokens))
    for marker in _run_tasks(workers.tokenize_task, todo, n_workers, init, log, "tokenize"):
        tmarkers[marker["task"]] = marker
    tok_markers = [tmarkers[k] for k in range(len(files))]
    tokenize_seconds = time.perf_counter() - t0

    # phase 4: manifest and report
    splits = {s: [sh for m in tok_markers for sh in m["shards"][s]] for s in ("train", "val")}
    sources = [{"file": fm["input"], "documents_read": fm["stages"]["read"]["kept"],
                "documents": sum(sh["documents"] for s in ("train", "val") for sh in tm["shards"][s]),
                "tokens": tm["tokens"]} for fm, tm in zip(filter_markers, tok_markers)]
    manifest = write_manifest(out, info, dtype, splits, sources, opts.val_fraction)
    stats = {"files": [str(f) for f in files], "filter": filter_markers, "dedup": dedup, "tokenize": tok_markers,
             "phases": {"filter": filter_seconds, "dedup": dedup.get("seconds", 0.0) if opts.dedup else 0.0,
                        "tokenize": tokenize_seconds, "total": time.perf_counter() - t_start},
             "workers": n_workers, "resumed": resumed, "stage_names": names,
             "peak_rss_mb_main": workers.peak_rss_mb(),
             "options": {k: v for k, v in asdict(opts).items() if not k.endswith("factory")}}
    write_json_atomic(out / "stats.json", stats)
    report = write_report(out, stats, manifest)
    log(f"done: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens; {report}")
    return {"manifest": manifest, "report": str(report), "stats": stats}
