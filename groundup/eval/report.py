"""Evaluation reports: the rich table, results JSON, a markdown page with a PNG chart, and side-by-side comparisons.

`write_run(results, out_dir)` writes `results.json`, `report.md` and
`scores.png` atomically; `compare(paths)` reads several results.json files
and lays their metrics side by side (table + grouped bar chart).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

# the metric a task is usually quoted by, first match wins
HEADLINE = ("acc_norm", "acc", "exact_match_flexible", "exact_match", "pass@1", "bits_per_byte")


def headline(metrics: dict) -> str | None:
    for m in HEADLINE:
        if m in metrics:
            return m
    return next(iter(metrics), None)


def _fmt(m: dict) -> str:
    v, se = m["value"], m.get("stderr", float("nan"))
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if se is None or math.isnan(se) else f"{v:.4f} ± {se:.4f}"


def rows(results: dict) -> list[tuple[str, str, str, int]]:
    """(task, metric, 'value ± stderr', n) for every metric of every task."""
    return [(task, name, _fmt(m), r["n"]) for task, r in results["tasks"].items() for name, m in r["metrics"].items()]


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{results['model']}  ({results.get('time_s', 0):.0f} s, "
                    f"{100 * (results.get('model_share') or 0):.0f}% in the model)")
    for col in ("task", "metric", "value ± stderr", "n"):
        t.add_column(col, justify="right" if col in ("n",) else "left")
    for task, metric, val, n in rows(results):
        t.add_row(task, metric, val, str(n))
    Console(stderr=False).print(t)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def markdown(results: dict, chart: str | None = None) -> str:
    s = results["settings"]
    lines = [f"# Evaluation: {results['model']}", "",
             f"{results['created']} · limit {s.get('limit')} · few-shot {s.get('num_fewshot')} · chat {s.get('chat')} · "
             f"seed {s.get('seed')} · {results.get('time_s', 0):.0f} s ({100 * (results.get('model_share') or 0):.0f}% "
             f"in the model)", "", "| task | metric | value ± stderr | n |", "|---|---|---:|---:|"]
    lines += [f"| {t} | {m} | {v} | {n} |" for t, m, v, n in rows(results)]
    if chart:
        lines += ["", f"![scores]({chart})"]
    return "\n".join(lines) + "\n"


def bar_chart(series: dict[str, dict[str, tuple[float, float]]], path: Path, title: str) -> None:
    """series: {run label: {task: (value, stderr)}} -> grouped bars with error bars, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t for s in series.values() for t in s))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(tasks) * max(1, len(series)) ** 0.5), 3.6))
    for k, (label, vals) in enumerate(series.items()):
        xs = [i + k * width - 0.4 + width / 2 for i in range(len(tasks))]
        ys = [vals.get(t, (0.0, 0.0))[0] for t in tasks]
        err = [0.0 if math.isnan(vals.get(t, (0, 0))[1]) else vals.get(t, (0, 0))[1] for t in tasks]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def headline_series(results: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for task, r in results["tasks"].items():
        m = headline(r["metrics"])
        if m and m != "bits_per_byte":
            out[f"{task}\n{m}"] = (r["metrics"][m]["value"], r["metrics"][m].get("stderr", float("nan")))
    return out


def write_run(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / "results.json", (json.dumps(results, indent=1) + "\n").encode())
    chart = None
    series = headline_series(results)
    if series:
        bar_chart({results["model"]: series}, out_dir / "scores.png", "headline metric per task")
        chart = "scores.png"
    _atomic_write(out_dir / "report.md", markdown(results, chart).encode())
    return out_dir / "results.json"


def compare(paths: list[Path], png: Path | None = None) -> str:
    """A markdown table of several runs' metrics side by side (and a grouped chart)."""
    from groundup.errors import GroundupError

    runs = []
    for p in paths:
        p = p / "results.json" if p.is_dir() else p
        try:
            runs.append((p, json.loads(p.read_text())))
        except (OSError, ValueError) as e:
            raise GroundupError(f"cannot read eval results {p}: {e}") from None
    labels = [f"{r['model']} ({p.parent.name})" for p, r in runs]
    keys = list(dict.fromkeys((t, m) for _, r in runs for t, tr in r["tasks"].items() for m in tr["metrics"]))
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(runs)]
    for t, m in keys:
        cells = [_fmt(r["tasks"][t]["metrics"][m]) if t in r["tasks"] and m in r["tasks"][t]["metrics"] else "-"
                 for _, r in runs]
        lines.append(f"| {t} | {m} | " + " | ".join(cells) + " |")
    if png is not None:
        bar_chart({lab: headline_series(r) for lab, (_, r) in zip(labels, runs)}, png, "runs compared")
    return "\n".join(lines) + "\n"
