"""Data pipeline benchmark: documents/s per stage and peak RSS, side by side with datatrove.

Input: the WARC samples in shared/data/warc (Common Crawl and wget crawls, ~100 HTML pages).

1. Per stage, in one process: each groundup stage and datatrove's equivalent (Trafilatura,
   GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, FineWebQualityFilter,
   PIIFormatter) run on the same documents, namely those our earlier stages kept. Both are
   warmed up first (model and tokenizer loading is not timed), then alternate for `--rounds`
   rounds; the best round counts. Printed: docs/s of each, the ratio (groundup / datatrove,
   > 1 = groundup faster) and how often the two agree on keep/drop.
2. End to end: `groundup data run` over the samples in a subprocess (its report's per-stage
   docs/s, wall-clock docs/s and peak RSS), then datatrove's LocalPipelineExecutor running
   the equivalent steps (our WARC reader -> Trafilatura -> Gopher x2 -> C4 -> FineWeb -> PII ->
   JsonlWriter; no language filter: datatrove's needs a fastText model download; its WarcReader
   needs cchardet and python-magic) in another.

    python -m bench.data [--rounds 3] [--workers 1] [--tokenizer bytes]
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def warc_files() -> list[Path]:
    files = sorted((SHARED / "warc").glob("*.warc.gz"))
    if not files:
        raise SystemExit(f"no WARC samples under {SHARED / 'warc'}")
    return files


def datatrove_steps() -> dict[str, object]:
    """Our stage name -> datatrove's step configured as FineWeb did (None: not runnable offline)."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.formatters import PIIFormatter

    return {"url_filter": None, "langid": None,
            "extract": Trafilatura(favour_precision=True, deduplicate=False, timeout=10.0),
            "gopher_rep": GopherRepetitionFilter(), "gopher_qual": GopherQualityFilter(),
            "c4": C4QualityFilter(filter_no_terminal_punct=False), "fineweb": FineWebQualityFilter(),
            "pii": PIIFormatter()}


def _ours(stage, docs: list) -> tuple[float, list[bool]]:
    docs = copy.deepcopy(docs)
    t = time.perf_counter()
    kept = [not isinstance(stage.apply(d), str) for d in docs]
    return time.perf_counter() - t, kept


def _theirs(step, docs: list) -> tuple[float, list[bool]]:
    from groundup.data.scaleout import to_datatrove

    dts = [to_datatrove(d) for d in docs]
    for d in dts:
        if "html" in d.metadata:  # datatrove's extractors read the HTML from `text`
            d.text = d.metadata.pop("html")
    t = time.perf_counter()
    out = {d.id for d in step.run(iter(dts))}
    return time.perf_counter() - t, [d.id in out for d in docs]


def per_stage(rounds: int) -> list[dict]:
    from groundup.data.readers import read_any
    from groundup.data.stages import default_stages

    docs = [d for f in warc_files() for d in read_any(f)]
    peers = datatrove_steps()
    rows = []
    for stage in default_stages():
        step = peers.get(stage.name)
        _ours(stage, docs[:2])  # warm-up: model loading, imports, caches
        if step is not None:
            _theirs(step, docs[:2])
        best_ours = best_theirs = float("inf")
        kept_ours = kept_theirs = None
        for _ in range(rounds):
            s, kept_ours = _ours(stage, docs)
            best_ours = min(best_ours, s)
            if step is not None:
                s, kept_theirs = _theirs(step, docs)
                best_theirs = min(best_theirs, s)
        row = {"stage": stage.name, "docs": len(docs), "ours": len(docs) / best_ours}
        if step is not None:
            row["datatrove"] = len(docs) / best_theirs
            row["agree"] = sum(a == b for a, b in zip(kept_ours, kept_theirs)) / max(1, len(docs))
        rows.append(row)
        kept = []
        for d in docs:  # the next stage sees what ours kept (with our edits, e.g. extracted text)
            r = stage.apply(copy.deepcopy(d))
            if not isinstance(r, str):
                kept.append(r)
        docs = kept
    return rows


def run_ours(workers: int, tokenizer: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "groundup", "data", "run", *map(str, warc_files()), "--out", f"{tmp}/out",
               "--workers", str(workers), "--tokenizer", tokenizer]
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - t
        stats = json.loads(Path(f"{tmp}/out/stats.json").read_text())
    from groundup.data.report import stage_table

    rss = max([stats["peak_rss_mb_main"]] + [m["peak_rss_mb"] for m in stats["filter"] + stats["tokenize"]])
    rows = stage_table(stats)
    return {"read": rows[0]["in"], "wall": wall, "rss_mb": rss, "rows": rows, "phases": stats["phases"]}


DATATROVE_E2E = r"""
import json, resource, sys, time
from datatrove.executor import LocalPipelineExecutor
from groundup.data.scaleout import GroundupReader
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.writers import JsonlWriter
files, out, workers = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
steps = [GroundupReader(files, html_in_text=True), Trafilatura(favour_precision=True, deduplicate=False, timeout=10.0),
         GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
         FineWebQualityFilter(), PIIFormatter(), JsonlWriter(out + "/docs")]
t = time.perf_counter()
LocalPipelineExecutor(steps, tasks=workers, workers=workers, logging_dir=out + "/logs").run()
wall = time.perf_counter() - t
rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # KiB
print(json.dumps({"wall": wall, "rss_mb": rss / 1024}))
"""


def run_datatrove(workers: int) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        files = ",".join(map(str, warc_files()))
        proc = subprocess.run([sys.executable, "-c", DATATROVE_E2E, files, tmp, str(workers)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"datatrove end-to-end failed: {proc.stderr.strip().splitlines()[-1:]}")
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes on each side (default 1: in-process, so peak RSS is comparable)")
    ap.add_argument("--tokenizer", default="bytes", help="tokenizer for the end-to-end run (default bytes)")
    args = ap.parse_args(argv)
    try:
        import datatrove  # noqa: F401
        have_peer = True
    except ImportError:
        have_peer = False
        print("datatrove is not installed: groundup numbers only (pip install datatrove orjson)")

    # end to end first, while this process is small: a child's ru_maxrss starts at its parent's
    ours = run_ours(args.workers, args.tokenizer)
    dt = run_datatrove(args.workers) if have_peer else None
    print(f"end to end, {args.workers} worker(s): groundup data run (all stages + dedup + tokenize, "
          f"tokenizer {args.tokenizer})")
    for r in ours["rows"]:
        rate = "-" if r["docs_per_s"] == float("inf") else f"{r['docs_per_s']:,.1f}"
        print(f"  {r['name']:12s} in {r['in']:5d}  kept {r['kept']:5d}  {rate:>10s} docs/s  {r['seconds']:7.2f}s")
    print(f"  groundup : {ours['read'] / ours['wall']:6.1f} docs/s wall ({ours['read']} docs, "
          f"{ours['wall']:.1f}s incl. start-up), peak RSS {ours['rss_mb']:.0f} MB")
    if dt:
        print(f"  datatrove: {ours['read'] / dt['wall']:6.1f} docs/s wall ({dt['wall']:.1f}s incl. start-up; no "
              f"language ID, dedup or tokenize), peak RSS {dt['rss_mb']:.0f} MB")
        print(f"  ratio (groundup / datatrove docs/s): {dt['wall'] / ours['wall']:.2f}x, "
              f"peak RSS {ours['rss_mb'] / dt['rss_mb']:.2f}x")

    print(f"\nper stage, one process, best of {args.rounds} ({', '.join(f.name for f in warc_files())})")
    print(f"{'stage':12s} {'docs':>5s} {'groundup/s':>11s} {'datatrove/s':>12s} {'ratio':>7s} {'agree':>6s}")
    rows = per_stage(args.rounds) if have_peer else []
    for r in rows:
        if "datatrove" in r:
            print(f"{r['stage']:12s} {r['docs']:5d} {r['ours']:11,.1f} {r['datatrove']:12,.1f} "
                  f"{r['ours'] / r['datatrove']:6.2f}x {r['agree']:6.0%}")
        else:
            print(f"{r['stage']:12s} {r['docs']:5d} {r['ours']:11,.1f} {'n/a':>12s}")
    print(f"\nthis process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
