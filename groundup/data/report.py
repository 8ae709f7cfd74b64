"""The pipeline's summary: per-stage funnel (in / kept / dropped by reason), speed, memory, bad input.

`stage_table(stats)` folds the per-task counts of a run (pipeline.py's stats.json) into one row
per stage, in pipeline order; `write_report(out, stats, manifest)` writes `report.md` and
`funnel.png` (matplotlib, Agg backend: no display needed). Documents/s per stage is documents in
divided by the seconds spent inside that stage, summed over worker processes (so it is the
speed of one process); the run's wall-clock rate is in the header.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _merge(into: dict[str, dict], counts: dict[str, dict]) -> None:
    for name, c in counts.items():
        row = into.setdefault(name, {"in": 0, "kept": 0, "dropped": {}, "seconds": 0.0})
        row["in"] += c["in"]
        row["kept"] += c["kept"]
        row["seconds"] += c["seconds"]
        for reason, n in c["dropped"].items():
            row["dropped"][reason] = row["dropped"].get(reason, 0) + n


def stage_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage: name, in, kept, dropped (reason -> n), seconds, docs_per_s.

    Every configured stage gets a row, in pipeline order, even when no document reached it.
    """
    pre: dict[str, dict] = {}
    post: dict[str, dict] = {}
    for m in stats["filter"]:
        _merge(pre, m["stages"])
    for m in stats["tokenize"]:
        _merge(post, m["stages"])
    names = stats.get("stage_names") or []
    cut = names.index("|") if "|" in names else len(names)
    empty = {"in": 0, "kept": 0, "dropped": {}, "seconds": 0.0}
    minhash = pre.pop("minhash", None)
    rows = [{"name": n, **pre.get(n, empty)} for n in ["read", *names[:cut]]]
    rows += [{"name": n, **c} for n, c in pre.items() if n not in names and n != "read"]
    dedup = stats.get("dedup") or {}
    if dedup.get("counts"):
        c = dedup["counts"]
        seconds = (minhash or {}).get("seconds", 0.0) + dedup.get("seconds", 0.0)
        rows.append({"name": "dedup", "in": c["in"], "kept": c["kept"], "dropped": c["dropped"], "seconds": seconds})
    tok = post.pop("tokenize", empty)
    rows += [{"name": n, **post.get(n, empty)} for n in names[cut + 1:]]
    rows += [{"name": n, **c} for n, c in post.items() if n not in names]
    rows.append({"name": "tokenize", **tok})
    for r in rows:
        r["docs_per_s"] = r["in"] / r["seconds"] if r["seconds"] > 0 else float("inf")
    return rows


def _fmt_rate(r: float) -> str:
    return "-" if r == float("inf") else f"{r:,.0f}" if r >= 100 else f"{r:.1f}"


def plot_funnel(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars: documents kept (green) and dropped (red) at each stage; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows][::-1]
    kept = [r["kept"] for r in rows][::-1]
    dropped = [r["in"] - r["kept"] for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    ax.barh(names, kept, color="#3a923a", label="kept")
    ax.barh(names, dropped, left=kept, color="#d04a3a", label="dropped")
    for y, (k, d) in enumerate(zip(kept, dropped)):
        ax.text(k + d, y, f" {k:,} / {k + d:,}", va="center", fontsize=8)
    ax.set_xlabel("documents")
    ax.set_title("pipeline funnel: documents kept / entering each stage")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, max([k + d for k, d in zip(kept, dropped)] + [1]) * 1.25)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_report(out: str | os.PathLike, stats: dict[str, Any], manifest: dict[str, Any]) -> Path:
    """Write report.md and funnel.png into `out`; returns the report's path."""
    out = Path(out)
    rows = stage_table(stats)
    plot_funnel(rows, out / "funnel.png")
    phases = stats["phases"]
    read = rows[0]["kept"] if rows else 0
    worker_rss = max([m.get("peak_rss_mb", 0) for m in stats["filter"] + stats["tokenize"]] + [0])
    tk = manifest["tokenizer"]
    lines = [
        "# Data pipeline report", "",
        f"- inputs: {len(stats['files'])} file(s); workers: {stats['workers']}"
        + ("; resumed from an earlier run" if stats.get("resumed") else ""),
        f"- documents: {read:,} read -> {manifest['documents']:,} in shards "
        f"(train {manifest['splits']['train']['documents']:,}, val {manifest['splits']['val']['documents']:,})",
        f"- tokens: {manifest['tokens']:,} ({manifest['dtype']}; tokenizer {tk['name']}, vocab {tk['vocab_size']:,}, "
        f"BOS {tk['bos']!r} = {tk['bos_id']})",
        f"- wall time{' of this (resumed) invocation' if stats.get('resumed') else ''}: {phases['total']:.1f}s "
        f"(filter {phases['filter']:.1f}s, dedup {phases['dedup']:.1f}s, tokenize {phases['tokenize']:.1f}s)"
        + ("" if stats.get("resumed") else f"; {read / max(phases['total'], 1e-9):,.1f} documents/s overall"),
        f"- peak RSS: main process {stats['peak_rss_mb_main']:.0f} MB, largest worker {worker_rss:.0f} MB", "",
        "## Stages", "",
        "| stage | in | kept | dropped | top drop reasons | docs/s (one process) | seconds |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        reasons = sorted(r["dropped"].items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{k} {v:,}" for k, v in reasons[:4]) + (" ..." if len(reasons) > 4 else "")
        lines.append(f"| {r['name']} | {r['in']:,} | {r['kept']:,} | {r['in'] - r['kept']:,} | {top} | "
                     f"{_fmt_rate(r['docs_per_s'])} | {r['seconds']:.2f} |")
    lines += ["", "![funnel](funnel.png)", "", "## Input files", "",
              "| file | documents | skipped records | replaced chars | problems |", "|---|---:|---:|---:|---|"]
    for m in stats["filter"]:
        rd = m["read"]
        problems = []
        if rd["truncated_files"]:
            problems.append("truncated/corrupt")
        if rd["records"] == 0:
            size = os.path.getsize(m["input"]) if os.path.exists(m["input"]) else -1
            problems.append("empty file" if size == 0 else "no documents")
        problems += [e.split(": ", 1)[-1] for e in rd["errors"][:2]]
        if rd["error_count"] > 2:
            problems.append(f"{rd['error_count'] - 2} more error(s)")
        lines.append(f"| {Path(m['input']).name} | {rd['records']:,} | {rd['skipped']:,} | {rd['replaced_chars']:,} "
                     f"| {'; '.join(problems).replace('|', '/') or '-'} |")
    n_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    lines += ["", f"Shards: {n_shards} file(s), see manifest.json.", ""]
    path = out / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path
