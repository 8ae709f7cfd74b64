"""Build llama.cpp's `llama-server` once, as the peer for the serving benchmark (bench/serve.py).

The binary comes from the llama-cpp-python source distribution on PyPI (it vendors
llama.cpp), the same version the Makefile pins for the reference, built with the same
CPU-aware flags: AVX2 always, AVX-512 parts only where /proc/cpuinfo has them, AMX never,
ggml's own thread pool instead of OpenMP; plus no libcurl and static libraries so the
binary stands alone. It is cached at

    ~/.cache/groundup/llama-server/<version>/llama-server

and built only when missing (about 5 minutes on 2 cores). The binary is copied next to
its final name and renamed into place, so an interrupted build never leaves half a file.

    python -m bench.llama_server          # build if missing, print the path
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.3.36"  # the llama-cpp-python version the Makefile pins (LLAMA_CPP_VERSION)
CACHE = Path(os.environ.get("GROUNDUP_CACHE", Path.home() / ".cache" / "groundup"))
JOBS = 2


def server_path(version: str = VERSION) -> Path:
    """Where the cached llama-server binary for `version` lives (it may not exist yet)."""
    return CACHE / "llama-server" / version / "llama-server"


def cpu_flags() -> set[str]:
    """The first `flags` line of /proc/cpuinfo as a set (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cmake_args(flags: set[str] | None = None) -> list[str]:
    """The Makefile's LLAMA_CMAKE_ARGS for this CPU, plus what a standalone server needs."""
    flags = cpu_flags() if flags is None else flags
    on = lambda f: "ON" if f in flags else "OFF"  # noqa: E731
    return [
        "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
        f"-DGGML_AVX512={on('avx512f')}", f"-DGGML_AVX512_VNNI={on('avx512_vnni')}",
        f"-DGGML_AVX512_BF16={on('avx512_bf16')}",
        "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_BF16=OFF", "-DGGML_OPENMP=OFF",
        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release",
    ]


def log(msg: str) -> None:
    print(f"[llama-server] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path | None = None) -> None:
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"command failed with exit status {r.returncode}: {' '.join(cmd)}")


def download_sdist(version: str, dest: Path) -> Path:
    """The llama-cpp-python sdist for `version`, fetched by pip into `dest`."""
    # --no-binary for this package only: pip still prepares the sdist's metadata, and with
    # ":all:" it would compile every build dependency (setuptools, hatchling, ...) from source.
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
         f"llama-cpp-python=={version}", "-d", str(dest)])
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz")) + sorted(dest.glob("llama-cpp-python-*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no llama-cpp-python sdist in {dest}")
    return found[0]


def unpack(sdist: Path, dest: Path) -> Path:
    """Unpack `sdist` into `dest`; returns its vendor/llama.cpp directory."""
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    roots = [p for p in dest.iterdir() if p.is_dir()]
    src = roots[0] / "vendor" / "llama.cpp" if len(roots) == 1 else None
    if src is None or not (src / "CMakeLists.txt").exists():
        raise RuntimeError(f"{sdist.name} has no vendor/llama.cpp/CMakeLists.txt")
    return src


def build(version: str = VERSION) -> Path:
    """Download, configure and build llama-server for `version`; place it atomically. Returns its path."""
    target = server_path(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build of the same version waits, then finds the binary
        if target.exists():
            return target
        work = target.parent / "work"  # fixed, so a build killed midway is cleared by the next one
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _build_in(work, version, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"built {target}")
    return target


def _build_in(work: Path, version: str, target: Path) -> None:
    """Fetch the sdist into `work`, build llama-server there, copy it to `target` atomically."""
    log(f"building llama-server from llama-cpp-python {version} in {work} (about 5 minutes)")
    src = unpack(download_sdist(version, work / "dl"), work / "src")
    bdir = work / "build"
    run(["cmake", "-S", str(src), "-B", str(bdir), *cmake_args()])
    run(["cmake", "--build", str(bdir), "--target", "llama-server", f"-j{JOBS}"])
    built = bdir / "bin" / "llama-server"
    if not built.exists():
        raise RuntimeError(f"the build finished but {built} is missing")
    partial = target.with_name(target.name + ".partial")
    shutil.copy2(built, partial)
    partial.chmod(0o755)
    os.replace(partial, target)


def ensure_llama_server(version: str = VERSION) -> Path:
    """Path of a working llama-server binary for `version`, building it first when missing."""
    target = server_path(version)
    if target.exists() and os.access(target, os.X_OK):
        return target
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        raise RuntimeError("building llama-server needs cmake and a C++ compiler (apt-get install cmake g++)")
    return build(version)


def main() -> int:
    try:
        print(ensure_llama_server())
    except (RuntimeError, OSError) as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
