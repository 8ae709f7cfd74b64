"""Build and call the C merge loop (bpe_merge.c) through ctypes.

The shared library is compiled on first use with the system C compiler ($CC, else `cc`) into
<groundup cache>/native/, named by a hash of the source and the compiler, so an edited source is
rebuilt and a built one is reused. The compile writes a temporary file and renames it into place,
so two processes building at once never load half a library. When no compiler is there (or the
build fails), `merge_loop` returns None and bpe.py falls back to the Python loop, which learns the
same merges.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from groundup.errors import GroundupError

SOURCE = Path(__file__).with_name("bpe_merge.c")
_why_not: str | None = None


def build_dir() -> Path:
    from groundup.registry import cache_dir

    return cache_dir() / "native"


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    global _why_not
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _why_not = "no C compiler (cc) on PATH"
        return None
    if not SOURCE.is_file():
        _why_not = f"{SOURCE.name} is missing from the installed package"
        return None
    src = SOURCE.read_bytes()
    tag = hashlib.sha256(src + cc.encode()).hexdigest()[:16]
    out_dir = build_dir()
    lib = out_dir / f"bpe_merge-{tag}.so"
    if not lib.exists():
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
            os.close(fd)
            run = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
                                 capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                os.unlink(tmp)
                _why_not = f"{cc} failed: {run.stderr.strip()[:300]}"
                return None
            os.replace(tmp, lib)
            for old in out_dir.glob("bpe_merge-*.so"):  # builds of earlier sources
                if old != lib:
                    old.unlink(missing_ok=True)
        except (OSError, subprocess.SubprocessError) as e:
            _why_not = f"could not build {lib}: {e}"
            return None
    try:
        handle = ctypes.CDLL(str(lib))
        fn = handle.bpe_merge_loop
    except (OSError, AttributeError) as e:
        _why_not = f"could not load {lib}: {e}"
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64),
                   ctypes.c_int32, ctypes.POINTER(ctypes.c_int32), ctypes.c_int64]
    return handle


def available() -> bool:
    """Whether the C merge loop builds and loads here."""
    return _library() is not None


def why_not() -> str | None:
    """Why the C merge loop is not available (None when it is)."""
    _library()
    return _why_not


def merge_loop(words: list[bytes], freqs: list[int], n_tokens: int, required: bool = False
               ) -> list[tuple[int, int]] | None:
    """The merges (left id, right id) from the C loop; None when it is not available (unless
    `required`, then a GroundupError saying why)."""
    import numpy as np

    lib = _library()
    if lib is None:
        if required:
            raise GroundupError(f"the C merge loop is not available: {_why_not}")
        return None
    data = b"".join(words)
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum([len(w) for w in words], out=offsets[1:])
    counts = np.asarray(freqs, dtype=np.int64)
    room = max(2 * (n_tokens - 256), 0) + 64
    while True:
        out = np.empty(2 * room, dtype=np.int32)
        n = lib.bpe_merge_loop(len(words), data, offsets.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                               counts.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), n_tokens,
                               out.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), room)
        if n == -2:  # more merges than expected (many repeated byte strings): make room, run again
            room *= 4
            continue
        if n < 0:
            raise GroundupError("the C merge loop ran out of memory")
        return [(int(a), int(b)) for a, b in out[:2 * n].reshape(-1, 2)]
