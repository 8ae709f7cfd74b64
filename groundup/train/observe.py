"""What a training run shows and records: the progress bar, metrics.jsonl, samples and loss.png.

Only rank 0 observes (the loop makes the others pass `enabled=False`). Every record is one JSON
object per line appended to OUT/metrics.jsonl and flushed at once, so a killed run keeps what it
logged: {"kind": "train", "step", "loss", "lr", "tokens", "tok_per_s", "mfu", ...} per logged
step, {"kind": "val", "step", "val_loss", "val_bpb", ...} per evaluation, {"kind": "sample", ...}.
On resume `truncate_metrics` drops the records past the checkpoint's step, so the file tells one
uninterrupted story. `plot_losses` draws train and validation loss (and bits/byte) to a PNG.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (the run was killed mid-write) is skipped."""
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Keep only the records with step <= `step` (atomically)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    os.replace(tmp, path)


def _fmt_rate(x: float) -> str:
    return f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


class Observer:
    """Progress bar + metrics file + console lines for one run (a no-op when not enabled)."""

    def __init__(self, out: Path, total_steps: int, start_step: int, enabled: bool = True,
                 progress: bool = True) -> None:
        self.enabled = enabled
        self.metrics_path = Path(out) / METRICS
        self._file = None
        self._progress = None
        self._task = None
        if not enabled:
            return
        from rich.console import Console

        self.console = Console(stderr=True)
        self._file = open(self.metrics_path, "a")
        if progress and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._progress = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=self.console, refresh_per_second=4)
            self._task = self._progress.add_task("pretrain", total=total_steps, completed=start_step, stats="")
            self._progress.start()

    def record(self, rec: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(rec) + "\n")
            self._file.flush()

    def train_step(self, rec: dict[str, Any], print_line: bool) -> None:
        """One logged optimizer step: the bar's numbers, the JSONL record, a line when not on a terminal."""
        if not self.enabled:
            return
        self.record({"kind": "train", **rec})
        mfu = rec.get("mfu")
        stats = (f"loss {rec['loss']:.4f}  {_fmt_rate(rec['tok_per_s'])} tok/s"
                 + (f"  MFU {100 * mfu:.1f}%" if mfu is not None else "")
                 + (f" ({100 * rec['mfu_user']:.1f}% of --peak-flops)" if rec.get("mfu_user") is not None else ""))
        if self._progress is not None:
            self._progress.update(self._task, completed=rec["step"], stats=stats)
        elif print_line:
            self.console.print(f"step {rec['step']:>6}/{rec['total']}  {stats}  lr×{rec['lr']:.3f}",
                               highlight=False)

    def advance(self, step: int) -> None:
        """Move the bar without logging (steps between --log-every)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def validation(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.record({"kind": "val", **rec})
        self.console.print(f"step {rec['step']:>6}  val loss {rec['val_loss']:.4f}  "
                           f"{rec['val_bpb']:.4f} bits/byte", highlight=False)

    def sample(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        self.record({"kind": "sample", "step": step, "text": text})
        self.console.print(f"step {step:>6}  sample: {text!r}", highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._file is not None:
            self._file.close()
            self._file = None


def plot_losses(metrics_path: str | os.PathLike, png: str | os.PathLike, title: str = "") -> Path | None:
    """Train loss (and validation loss / bits per byte when recorded) against step, written atomically."""
    recs = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in recs
             if r.get("kind") == "train" and math.isfinite(r.get("loss", math.nan))]
    val = [(r["step"], r["val_loss"], r["val_bpb"]) for r in recs if r.get("kind") == "val"]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], lw=1, alpha=0.8, label="train loss")
    if val:
        ax.plot([s for s, _, _ in val], [v for _, v, _ in val], "o-", lw=1.5, ms=3, label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    if val:
        ax2 = ax.twinx()
        ax2.plot([s for s, _, _ in val], [b for _, _, b in val], "s--", color="tab:green", lw=1, ms=3,
                 label="val bits/byte")
        ax2.set_ylabel("bits per byte")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    else:
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    png = Path(png)
    tmp = png.with_name(".tmp-" + png.name)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, png)
    return png
