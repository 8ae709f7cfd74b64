"""Scale-out: the same document stages on datatrove's executors (local processes, Slurm, Ray).

datatrove (Hugging Face's pipeline library, which produced FineWeb) runs a list of pipeline
steps over `tasks` ranks, each reading its own slice of the inputs, on one machine
(`LocalPipelineExecutor`), a Slurm cluster (`SlurmPipelineExecutor`) or a Ray cluster
(`RayPipelineExecutor`), with per-rank completion markers of its own so a job resumes. Here:

- `GroundupReader` reads the input files with readers.read_any, rank r taking files r, r+N, ...
- `GroundupStep` runs one of our stages (built in the worker from a picklable factory) on
  each document, counting drops by reason in datatrove's stats;
- `filter_pipeline(files, out)` = reader -> the FineWeb stages up to dedup -> datatrove's
  JsonlWriter (`out/<rank>.jsonl.gz`), which `groundup data run` then deduplicates and
  tokenizes. The same list goes to any executor, e.g. on Slurm:

      from datatrove.executor import SlurmPipelineExecutor
      from groundup.data.scaleout import filter_pipeline
      SlurmPipelineExecutor(pipeline=filter_pipeline(files, "s3://bucket/filtered"), tasks=1000,
                            time="10:00:00", partition="cpu", logging_dir="logs/filter").run()

The command `groundup data datatrove INPUTS --out DIR --tasks N --workers N` runs it locally.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from datatrove.data import Document as DTDocument
from datatrove.pipeline.base import PipelineStep

from groundup.data.document import Document


def to_datatrove(doc: Document) -> DTDocument:
    meta = dict(doc.meta)
    meta.update(url=doc.url, source=doc.source)
    if doc.html is not None:
        meta["html"] = doc.html
    return DTDocument(text=doc.text, id=doc.id, metadata=meta)


def from_datatrove(d: DTDocument) -> Document:
    meta = dict(d.metadata)
    url, source, html = meta.pop("url", None), meta.pop("source", ""), meta.pop("html", None)
    return Document(text=d.text, id=str(d.id), url=url, source=source or "", html=html, meta=meta)


class GroundupReader(PipelineStep):
    """Rank r of N reads files r, r+N, ... with groundup's readers."""

    name = "groundup reader"
    type = "📖 - READER"

    def __init__(self, files: list[str], text_split: str = "file", html_in_text: bool = False) -> None:
        super().__init__()
        self.files, self.text_split = [str(f) for f in files], text_split
        self.html_in_text = html_in_text  # for datatrove's own extractors, which read HTML from `text`

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[DTDocument]:
        from groundup.data.readers import ReadStats, read_any

        for path in self.files[rank::world_size]:
            stats = ReadStats()
            for doc in read_any(path, stats=stats, text_split=self.text_split):
                self.stat_update("documents")
                d = to_datatrove(doc)
                if self.html_in_text and "html" in d.metadata:
                    d.text = d.metadata.pop("html")
                yield d
            if stats.truncated_files:
                self.stat_update("truncated_files")


class GroundupStep(PipelineStep):
    """One groundup stage (`factory()[index]`, built lazily in the worker) as a datatrove step."""

    type = "🔻 - FILTER"

    def __init__(self, factory: Callable[[], list], index: int, name: str) -> None:
        self.name = name  # before PipelineStep.__init__, which names its stats after it
        super().__init__()
        self.factory, self.index = factory, index
        self._stage = None

    def run(self, data: Iterator[DTDocument], rank: int = 0, world_size: int = 1) -> Iterator[DTDocument]:
        if self._stage is None:
            self._stage = self.factory()[self.index]
        for d in data:
            self.stat_update("total")
            with self.track_time():
                try:
                    result = self._stage.apply(from_datatrove(d))
                except Exception as ex:  # noqa: BLE001 - as in the local runner: drop the document, count why
                    result = f"{self.name}:error:{type(ex).__name__}"
            if isinstance(result, str):
                self.stat_update("dropped", result)
                continue
            self.stat_update("forwarded")
            yield to_datatrove(result)


def filter_pipeline(files: list[str], out: str, factory: Callable[[], list] | None = None,
                    languages: tuple[str, ...] = ("en",), text_split: str = "file") -> list[PipelineStep]:
    """reader -> each stage of `factory()` (default: the FineWeb stages before dedup) -> JsonlWriter(out)."""
    from datatrove.pipeline.writers import JsonlWriter

    from groundup.data.pipeline import _Factory

    factory = factory or _Factory(tuple(languages), 0)
    steps: list[PipelineStep] = [GroundupReader(files, text_split)]
    steps += [GroundupStep(factory, i, s.name) for i, s in enumerate(factory())]
    steps.append(JsonlWriter(str(out), output_filename="${rank}.jsonl.gz", expand_metadata=True))
    return steps


def run_local(files: list[str], out: str | Path, tasks: int = 2, workers: int = 1,
              factory: Callable[[], list] | None = None, languages: tuple[str, ...] = ("en",),
              text_split: str = "file") -> list[Path]:
    """Run `filter_pipeline` with datatrove's LocalPipelineExecutor; the JSONL files it wrote."""
    from datatrove.executor import LocalPipelineExecutor

    out = Path(out)
    executor = LocalPipelineExecutor(pipeline=filter_pipeline(files, str(out / "documents"), factory, languages,
                                                              text_split),
                                     tasks=tasks, workers=workers, logging_dir=str(out / "logs"))
    executor.run()
    return sorted((out / "documents").glob("*.jsonl.gz"))
