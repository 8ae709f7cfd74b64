"""The evaluation harness: tasks' requests -> a backend (cached) -> per-item scores -> metrics.

`evaluate(backend, ["arc_easy", "gsm8k"], cfg, limit=100)` gathers every
request of every item, removes duplicates, answers what the SQLite cache
(eval/cache.py) does not already hold — in chunks, each committed as soon as
it is answered, so an interrupted run resumes where it stopped — then has each
task score its items and aggregates: the mean of each metric with its standard
error (sample standard deviation / sqrt(n)), or the task's own `aggregate`
(bits per byte is a ratio of sums, not a mean of ratios).

Backends: eval/local_backend.py (in-process, batched) and eval/api_backend.py
(any OpenAI-compatible endpoint). Both answer `loglikelihood`, `generate` and
`rolling` lists and carry an `identity` used in cache keys. The run records
how much of its wall time the backend (the model) took.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import asdict
from typing import Callable

from groundup.eval.cache import AnswerCache, request_key
from groundup.eval.task import Generate, Loglikelihood, Rolling, Task, TaskConfig

CHUNK = 256  # requests answered (and committed to the cache) at a time


def mean_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    if n < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def aggregate(task: Task, per_doc: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    own = getattr(task, "aggregate", None)
    if own is not None:
        return {k: (v if isinstance(v, dict) else {"value": v, "stderr": float("nan")}) for k, v in own(per_doc).items()}
    keys = list(dict.fromkeys(k for d in per_doc for k in d))
    out = {}
    for k in keys:
        m, se = mean_stderr([d[k] for d in per_doc if k in d])
        out[k] = {"value": m, "stderr": se}
    return out


class _Progress:
    """A rich progress bar over requests (quiet when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=True)

    def __enter__(self) -> "_Progress":
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, name: str, total: int) -> Callable[[int], None]:
        if not self.bar:
            return lambda n: None
        tid = self.bar.add_task(name, total=total)
        return lambda n: self.bar.advance(tid, n)


def answer(backend, keyed: list[tuple[str, str, str, object]], cache: AnswerCache | None,
           progress: _Progress, label: str) -> tuple[dict[str, object], float]:
    """Answers for (key, task, item, request) rows: from the cache, else from the backend.
    Returns {key: answer} and the seconds spent in the backend."""
    unique = {k: (t, i, r) for k, t, i, r in keyed}
    got = cache.get_many(list(unique)) if cache else {}
    todo = [(k, *v) for k, v in unique.items() if k not in got]
    model_s = 0.0
    kinds = ((Loglikelihood, "loglikelihood"), (Rolling, "rolling"), (Generate, "generate"))
    for cls, method in kinds:
        rows = [row for row in todo if isinstance(row[3], cls)]
        if not rows:
            continue
        advance = progress.task(f"{label} {method}", len(rows))
        for s in range(0, len(rows), CHUNK):
            part = rows[s:s + CHUNK]
            reqs = [r for _, _, _, r in part]
            t0 = time.perf_counter()
            if cls is Generate:
                res = backend.generate(reqs, lambda n: None)
                advance(len(part))
            else:
                res = getattr(backend, method)(reqs, advance)
            model_s += time.perf_counter() - t0
            res = [list(x) if isinstance(x, tuple) else x for x in res]
            if cache:
                cache.put_many([(k, backend.identity, t, i, r, a) for (k, t, i, r), a in zip(part, res)])
            got.update({k: a for (k, _, _, _), a in zip(part, res)})
    return got, model_s


def evaluate(backend, task_names: list[str], cfg: TaskConfig | None = None, limit: int | None = None,
             cache: AnswerCache | None = None, show_progress: bool = True) -> dict:
    """Run tasks on a backend; the results dict that `eval run` writes as JSON."""
    from groundup.eval.tasks import get_task

    cfg = cfg or TaskConfig()
    started = time.perf_counter()
    out: dict = {"model": backend.identity, "settings": {"limit": limit, **asdict(cfg)}, "tasks": {},
                 "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    model_total = 0.0
    with _Progress(show_progress) as progress:
        for name in task_names:
            t0 = time.perf_counter()
            task = get_task(name)
            docs = task.docs()
            docs = docs[:limit] if limit else docs
            per_doc_reqs = [task.requests(doc, cfg) for doc in docs]
            keyed = [(request_key(backend.identity, r), task.name, str(d), r)
                     for d, reqs in enumerate(per_doc_reqs) for r in reqs]
            answers, model_s = answer(backend, keyed, cache, progress, task.name)
            model_total += model_s
            per_doc, j = [], 0
            for doc, reqs in zip(docs, per_doc_reqs):
                res = [_as_result(answers[keyed[j + n][0]]) for n in range(len(reqs))]
                j += len(reqs)
                per_doc.append(task.score(doc, res, cfg))
            out["tasks"][task.name] = {
                "metrics": aggregate(task, per_doc), "n": len(docs), "requests": len(keyed),
                "output_type": task.output_type, "num_fewshot": task.default_fewshot if cfg.num_fewshot is None
                else cfg.num_fewshot, "time_s": round(time.perf_counter() - t0, 3), "model_s": round(model_s, 3)}
    wall = time.perf_counter() - started
    out["time_s"] = round(wall, 3)
    out["model_s"] = round(model_total, 3)
    out["model_share"] = round(model_total / wall, 4) if wall > 0 else None
    return out


def _as_result(a):
    return tuple(a) if isinstance(a, list) and len(a) == 2 and isinstance(a[0], float) else a
