"""The sandbox for model-generated code: run it in a separate, limited, isolated process.

Used by the code evaluations (HumanEval / MBPP pass@k), the RL rewards and the
agent's Python and shell tools. `run_python(code)` / `run_command(argv)` run the
program in a fresh temporary directory (removed afterwards) and return a
`SandboxResult`; `check_program(program, test)` is the HumanEval/MBPP check.

How (docs/sandbox.md has the full table of what is enforced where):

- This module prepares the work directory and a scrubbed environment, then
  starts sandbox_launcher.py *by path* (`python -I -S -B sandbox_launcher.py
  CONFIG`) in its own session/process group. The launcher unshares network,
  pid, mount, IPC and UTS namespaces where the kernel allows it, a monitor (pid
  1 of the new pid namespace) hides the host's files, and the program runs
  under rlimits, as a fresh unprivileged uid when we are root, with
  no_new_privs; when it exits the kernel kills everything left in the namespace.
- sandbox_io.pump reads stdout/stderr with a cap (head plus a 4 KiB tail),
  enforces the wall-clock timeout by SIGKILLing the whole process group (the
  pid namespace takes every descendant with it) and collects the launcher's
  report; `SandboxResult.isolation` says which isolation was in force.
"""
from __future__ import annotations

import dataclasses
import itertools
import marshal
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import PurePosixPath

from groundup.errors import GroundupError
from groundup.eval.sandbox_io import TAIL_BYTES, pump

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launcher.py")
DEFAULT_OUTPUT_CAP = 1 << 20  # bytes kept per stream (head), plus the last TAIL_BYTES
_UID_BASE = 1 << 30  # fresh uids per run: 2^30 + (pid mod 2^22) * 256 + (counter mod 256)
_uid_counter = itertools.count()


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool  # over the cap: head + "[... N bytes truncated ...]" + last 4 KiB
    stderr_truncated: bool
    wall_s: float
    cpu_s: float | None  # the program's own user+system time (None if it was killed by the timeout)
    max_rss_mb: float | None
    timed_out: bool
    killed_by: str | None  # "timeout", "cpu", "memory", "file_size", "procs" or None (inferred)
    isolation: tuple[str, ...]  # what was in force: netns, pidns, userns, mntns, ro-root, ...

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def _child_env(workdir: str, extra: dict[str, str] | None) -> dict[str, str]:
    """A minimal allowlist; nothing from os.environ (no API keys, no tokens)."""
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
           "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "USER": "sandbox", "LOGNAME": "sandbox", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(extra or {})
    return env


def _write_files(workdir: str, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        rel = PurePosixPath(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise GroundupError(f"sandbox file name {name!r} must be a relative path inside the sandbox")
        path = os.path.join(workdir, *rel.parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)


def _chown_tree(root: str, uid: int) -> None:
    os.chown(root, uid, uid)
    for base, dirs, names in os.walk(root):
        for name in dirs + names:
            os.chown(os.path.join(base, name), uid, uid, follow_symlinks=False)


def _remove_tree(path: str) -> None:
    def fix(func, p, _exc):  # a program may chmod 000 its own dirs; we own them (or are root)
        for q in (os.path.dirname(p), p):
            if os.path.isdir(q):
                os.chmod(q, 0o700)
        func(p)

    shutil.rmtree(path, onerror=fix)


def _kill_uid(uid: int) -> None:
    """Without a pid namespace: kill every process of the sandbox uid (catches setsid escapes)."""
    code = f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); os.kill(-1, 9)"
    subprocess.run([sys.executable, "-I", "-S", "-c", code], stderr=subprocess.DEVNULL, check=False)


def _killed_by(timed_out: bool, exit_code: int | None, sig: int | None, cpu: float | None,
               cpu_limit: int, stderr: str) -> str | None:
    """Which limit ended the program: from the signal, the CPU time used, and stderr's tail."""
    if timed_out:
        return "timeout"
    if exit_code == 0:
        return None
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu is not None and cpu >= cpu_limit - 0.05):
        return "cpu"
    tail = stderr[-TAIL_BYTES:]
    if sig == signal.SIGXFSZ or "File too large" in tail:
        return "file_size"
    if any(s in tail for s in ("MemoryError", "Cannot allocate memory", "std::bad_alloc")):
        return "memory"
    if "can't start new thread" in tail or ("Resource temporarily unavailable" in tail and "fork" in tail):
        return "procs"
    return None


def run_command(argv: list[str], *, stdin: str | bytes = "", timeout_s: float = 10,
                cpu_s: float | None = None, memory_mb: int = 512, file_size_mb: int = 16,
                max_procs: int = 64, files: dict[str, str | bytes] | None = None,
                network: bool = False, env: dict[str, str] | None = None,
                require: tuple[str, ...] = (), max_output_bytes: int = DEFAULT_OUTPUT_CAP,
                namespaces: bool = True) -> SandboxResult:
    """Run argv (looked up on the sandbox's PATH) in the sandbox; see the module docstring.

    `cpu_s` defaults to the wall timeout; `memory_mb` caps each process's address
    space; `env` adds variables to the minimal environment; `require` names
    isolation features (e.g. ("netns",)) without which the run is refused with a
    GroundupError instead of running less isolated. `namespaces=False` skips the
    namespaces: what a machine without them gets (rlimits, and uid-drop as root).
    """
    if not argv:
        raise GroundupError("sandbox: empty command; pass the program and its arguments as a list")
    bad_cpu = cpu_s is not None and cpu_s <= 0
    if timeout_s <= 0 or bad_cpu or memory_mb < 16 or file_size_mb < 1 or max_procs < 1:
        raise GroundupError("sandbox limits must be positive (timeout_s, cpu_s > 0; memory_mb >= 16; "
                            "file_size_mb, max_procs >= 1)")
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="groundup-sandbox-"))
    uid = None
    if os.geteuid() == 0:  # never run generated code as root: a fresh uid per run
        uid = _UID_BASE + (os.getpid() % (1 << 22)) * 256 + next(_uid_counter) % 256
    cpu_limit = max(1, math.ceil(cpu_s if cpu_s is not None else timeout_s))
    mb = 1 << 20
    try:
        _write_files(workdir, files or {})
        if uid is not None:
            _chown_tree(workdir, uid)
        status_r, status_w = os.pipe()
        cfg = {"argv": list(argv), "env": _child_env(workdir, env), "workdir": workdir, "uid": uid,
               "network": network, "require": list(require), "status_fd": status_w, "namespaces": namespaces,
               "tmp_mb": 4 * file_size_mb, "keep": sorted({os.path.realpath(p) for p in (
                   sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}),
               "rlimits": [("RLIMIT_CORE", 0, 0), ("RLIMIT_CPU", cpu_limit, cpu_limit + 1),
                           ("RLIMIT_AS", memory_mb * mb, memory_mb * mb),
                           ("RLIMIT_FSIZE", file_size_mb * mb, file_size_mb * mb),
                           ("RLIMIT_NOFILE", 256, 256), ("RLIMIT_NPROC", max_procs, max_procs)]}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", LAUNCHER, marshal.dumps(cfg).hex()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                env=cfg["env"], start_new_session=True, pass_fds=(status_w,))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        out, err, msg, timed_out = pump(proc, data, status_r, start + timeout_s, max_output_bytes)
        wall = time.monotonic() - start
        isolation = tuple(msg.get("isolation", ()))
        if uid is not None and "pidns" not in isolation:
            _kill_uid(uid)
    finally:
        _remove_tree(workdir)
    if "error" in msg:
        raise GroundupError(f"sandbox: {msg['error']}")
    code = os.waitstatus_to_exitcode(msg["status"]) if "status" in msg and not timed_out else None
    sig = -code if code is not None and code < 0 else (int(signal.SIGKILL) if timed_out else None)
    exit_code = code if code is not None and code >= 0 else None
    stderr = err.text()
    rss = msg.get("max_rss_kb")
    return SandboxResult(
        exit_code=exit_code, signal=sig, stdout=out.text(), stderr=stderr,
        stdout_truncated=out.dropped > 0, stderr_truncated=err.dropped > 0, wall_s=wall,
        cpu_s=msg.get("cpu_s"), max_rss_mb=None if rss is None else rss / 1024, timed_out=timed_out,
        killed_by=_killed_by(timed_out, exit_code, sig, msg.get("cpu_s"), cpu_limit, stderr),
        isolation=isolation)


def run_python(code: str, *, stdin: str | bytes = "", timeout_s: float = 10, cpu_s: float | None = None,
               memory_mb: int = 512, file_size_mb: int = 16, max_procs: int = 64,
               files: dict[str, str | bytes] | None = None, network: bool = False,
               env: dict[str, str] | None = None, require: tuple[str, ...] = (),
               max_output_bytes: int = DEFAULT_OUTPUT_CAP, namespaces: bool = True) -> SandboxResult:
    """Run Python source as main.py in the sandbox (the arguments are run_command's).

    The interpreter is this one (sys.executable, so the venv's packages import),
    run as `python -u -s -B main.py`: unbuffered so a timed-out program's output
    is kept, no user site, no bytecode files. Not `-I`: the environment is ours
    already, and the sandbox directory on sys.path lets `files` hold modules.
    """
    files = dict(files or {})
    if "main.py" in files:
        raise GroundupError("sandbox: 'main.py' is where run_python puts the code; rename that file")
    files["main.py"] = code
    return run_command([sys.executable, "-u", "-s", "-B", "main.py"], stdin=stdin, timeout_s=timeout_s,
                       cpu_s=cpu_s, memory_mb=memory_mb, file_size_mb=file_size_mb, max_procs=max_procs,
                       files=files, network=network, env=env, require=require,
                       max_output_bytes=max_output_bytes, namespaces=namespaces)


def check_program(program: str, test: str, timeout_s: float = 10, **limits) -> tuple[bool, SandboxResult]:
    """Run program + test; passed = exit 0, no timeout, and the run reached the end.

    `limits` are run_python's keyword arguments (memory_mb, cpu_s, network, ...).

    HumanEval: program = prompt + completion, test = test + f"\\ncheck({entry_point})";
    MBPP: program = the code, test = the asserts. A random marker printed after
    the test catches programs that `sys.exit(0)` / `os._exit(0)` before it.
    """
    marker = f"groundup-sandbox-done-{secrets.token_hex(16)}"
    tail = f"\n{marker}\n"
    done = f"\n__import__('os').write(1, {tail.encode()!r})\n"  # works even if print is shadowed
    result = run_python(f"{program}\n{test}{done}", timeout_s=timeout_s, **limits)
    reached = result.stdout.endswith(tail)
    if reached:
        result = dataclasses.replace(result, stdout=result.stdout[:-len(marker) - 2])
    return result.ok and reached, result


@lru_cache(maxsize=1)
def isolation_available() -> tuple[str, ...]:
    """The isolation a default run gets on this machine (runs a trivial program once, cached)."""
    return run_python("pass", timeout_s=30).isolation
