"""The sandbox for model-generated code: run it in a separate, limited, isolated process.

Used by the code evaluations (HumanEval / MBPP pass@k), the RL rewards and the
agent's Python and shell tools. `run_python(code)` / `run_command(argv)` run the
program in a fresh temporary directory (removed afterwards) and return a
`SandboxResult`; `check_program(program, test)` is the HumanEval/MBPP check.

How (docs/sandbox.md has the full table of what is enforced where):

- The parent starts a *launcher*, this same file run as `python -I -S -B
  sandbox.py CONFIG` in its own session/process group, with a scrubbed
  environment. The launcher unshares network, pid, mount, IPC and UTS
  namespaces (as root directly; otherwise inside a new user namespace when the
  kernel allows it) and forks a monitor that is pid 1 of the new pid namespace.
  The monitor makes `/` read-only and nosuid, mounts private tmpfs over
  /tmp, /var/tmp, /dev/shm, /root, /home and /run (re-binding the Python install
  and the work directory), mounts a fresh /proc, then forks the program, which
  sets rlimits (CPU, address space, file size, processes, open files, no core
  files), drops to a fresh unprivileged uid when we are root, sets
  no_new_privs, joins a new session keyring and execs. When the program exits, the monitor reports its wait
  status and exits; the kernel then kills everything left in the namespace.
- The parent reads stdout/stderr with a cap (head plus a 4 KiB tail), enforces
  the wall-clock timeout by SIGKILLing the whole process group (the pid
  namespace takes every descendant with it), and reports which isolation was in
  force for this run in `SandboxResult.isolation`.

The launcher half (everything before the `__main__` guard) runs in a fresh
interpreter and only imports builtin modules and ctypes, so it starts fast; the
parent half's heavier imports come after the guard on purpose.
"""
from __future__ import annotations

import marshal
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 1, 2
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
HIDDEN_DIRS = ("/root", "/home", "/run")  # homes (tokens, keys) and /run (daemon sockets)
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
KEYCTL_JOIN_SESSION_KEYRING = 1
_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        import ctypes

        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    enc = (lambda s: None if s is None else s.encode())
    import ctypes

    return _libc().mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def _mount_setattr(path: str, set_: int, clear: int, recursive: bool) -> bool:
    """mount_setattr(2) (Linux >= 5.12): change flags of a mount, or of a whole tree with AT_RECURSIVE."""
    import ctypes

    attr = (ctypes.c_uint64 * 4)(set_, clear, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    L = ctypes.c_long
    return _libc().syscall(L(SYS_MOUNT_SETATTR), L(AT_FDCWD), path.encode(), L(flags), attr, L(32)) == 0


def _prctl(option: int, value: int) -> bool:
    import ctypes

    U = ctypes.c_ulong
    return _libc().prctl(ctypes.c_int(option), U(value), U(0), U(0), U(0)) == 0


def _send(fd: int, message: dict) -> None:
    data = marshal.dumps(message)
    os.write(fd, len(data).to_bytes(4, "little") + data)


def _real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _bind(fd: int, path: str, writable: bool) -> None:
    os.makedirs(path, exist_ok=True)  # the path may live in a tmpfs we just mounted
    if not _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC):
        raise OSError(f"cannot bind-mount {path}")
    _mount_setattr(path, 0 if writable else MOUNT_ATTR_RDONLY, MOUNT_ATTR_RDONLY if writable else 0, True)


def _setup_mounts(cfg: dict, iso: list[str]) -> None:
    """In the new mount namespace: read-only /, private tmp dirs, hidden homes, fresh /proc."""
    if not _mount(None, "/", None, MS_REC | MS_PRIVATE):
        return
    iso.append("mntns")
    os.umask(0o022)
    work_fd = os.open(cfg["workdir"], os.O_PATH | os.O_DIRECTORY)
    keep = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in cfg["keep"] if _real_dir(p)]
    if _mount_setattr("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, True):
        iso.append("ro-root")
    tmp_opts = f"mode=1777,size={cfg['tmp_mb']}m"
    tmps = [d for d in PRIVATE_TMP_DIRS if _real_dir(d)]
    if all([_mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts) for d in tmps]):
        iso.append("private-tmp")
    to_hide = [d for d in HIDDEN_DIRS if _real_dir(d)]
    hidden = [d for d in to_hide if _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")]
    if hidden == to_hide:
        iso.append("hidden-home-run")
    for path, fd in keep:  # the Python install may live under a home we just hid
        if any(path == h or path.startswith(h + "/") for h in hidden):
            _bind(fd, path, writable=False)
    _bind(work_fd, cfg["workdir"], writable=True)
    if "pidns" in iso and _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC):
        iso.append("private-proc")


def _count_tasks(uid: int) -> int:
    """Threads owned by uid right now (RLIMIT_NPROC counts them all, machine-wide)."""
    n = 0
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                n += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            pass
    return n


def _which(name: str, path: str) -> str:
    """Resolve a command on PATH (os.execvpe would import modules the sandbox uid may not read)."""
    if "/" in name:
        return name
    for d in path.split(":"):
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(name)


def _exec_program(cfg: dict) -> None:
    """In the program's process: limits, drop privileges, exec. Never returns."""
    try:
        import _signal
        import resource  # both imported by the launcher already (the uid may not read the stdlib)

        os.chdir(cfg["workdir"])
        for name, soft, hard in cfg["rlimits"]:
            limit = getattr(resource, name)
            cur_hard = resource.getrlimit(limit)[1]
            if os.geteuid() != 0 and cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
            resource.setrlimit(limit, (min(soft, hard), hard))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if SYS_KEYCTL is not None:  # a new, empty session keyring: no keys inherited from us
            _libc().syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
        for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):  # Python ignores these; exec keeps SIG_IGN
            _signal.signal(sig, _signal.SIG_DFL)
        os.execve(_which(cfg["argv"][0], cfg["env"]["PATH"]), cfg["argv"], cfg["env"])
    except BaseException as exc:  # report anything, then fail like a shell would
        why = "command not found" if isinstance(exc, FileNotFoundError) else f"cannot run: {exc}"
        os.write(2, f"sandbox: {cfg['argv'][0]}: {why}\n".encode())
    os._exit(127)


def _monitor(cfg: dict, status_fd: int, iso: list[str], namespaced: bool) -> None:
    """The monitor (pid 1 of the new pid namespace when there is one): set up, run, report."""
    if "pidns" in iso:
        _prctl(PR_SET_PDEATHSIG, 9)
    if namespaced:
        _setup_mounts(cfg, iso)
        _libc().sethostname(b"sandbox", 7)
    if cfg["uid"] is not None:
        iso.append("uid-drop")
    elif "userns" not in iso:  # RLIMIT_NPROC counts all our uid's tasks: allow max_procs more
        extra = _count_tasks(os.getuid())
        cfg["rlimits"] = [(n, s + extra, h + extra) if n == "RLIMIT_NPROC" else (n, s, h)
                          for n, s, h in cfg["rlimits"]]
    iso += ["no-new-privs", "rlimits"]
    missing = [r for r in cfg["require"] if r not in iso]
    if missing:
        _send(status_fd, {"isolation": iso, "error": f"required isolation not available here: {missing}"})
        return
    _send(status_fd, {"isolation": iso})
    child = os.fork()
    if child == 0:
        _exec_program(cfg)
    while True:  # as pid 1 we also reap orphans; stop when the program itself exits
        pid, status, usage = os.wait4(-1, 0)
        if pid == child:
            break
    _send(status_fd, {"status": status, "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kb": usage.ru_maxrss})


def _launcher_main() -> None:
    for module in ("_signal", "resource", "ctypes"):  # load now: without namespaces the
        __import__(module)  # sandbox uid may be unable to read the stdlib (e.g. under /root)
    _prctl(PR_SET_PDEATHSIG, 9)  # if the parent dies, so do we, the monitor and its namespace
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status_fd, iso = cfg["status_fd"], []
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (0 if cfg["network"] else CLONE_NEWNET)
    uid, gid = os.getuid(), os.getgid()
    if not cfg["namespaces"]:
        namespaced = False
    elif os.geteuid() == 0:
        namespaced = _libc().unshare(flags) == 0
    else:  # a user namespace gives an unprivileged user the right to create the others
        namespaced = _libc().unshare(CLONE_NEWUSER | flags) == 0
        if namespaced:
            maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
            for name, text in maps:  # keep our own uid/gid inside; exec then drops the ns caps
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            iso.append("userns")
    if namespaced:
        iso += ["pidns"] + ([] if cfg["network"] else ["netns"])
    os.set_inheritable(status_fd, False)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _monitor(cfg, status_fd, iso, namespaced)
        except BaseException as exc:
            _send(status_fd, {"isolation": iso, "error": f"{type(exc).__name__}: {exc}"})
            code = 1
        os._exit(code)
    os.close(status_fd)
    os.waitpid(pid, 0)


if __name__ == "__main__":  # the launcher: a fresh interpreter, no parent-half imports
    _launcher_main()
    os._exit(0)

import dataclasses  # noqa: E402  (the parent half; see the module docstring)
import itertools  # noqa: E402
import math  # noqa: E402
import secrets  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import lru_cache  # noqa: E402
from pathlib import PurePosixPath  # noqa: E402

from groundup.errors import GroundupError  # noqa: E402

DEFAULT_OUTPUT_CAP = 1 << 20  # bytes kept per stream (head), plus the last TAIL_BYTES
TAIL_BYTES = 4096
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


class _CappedBuffer:
    """Keeps the first `cap` bytes and the last TAIL_BYTES of a stream, counting the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.head, self.tail, self.dropped = cap, bytearray(), bytearray(), 0

    def add(self, data: bytes) -> None:
        room = self.cap - len(self.head)
        self.head += data[:room]
        rest = data[room:] if room > 0 else data
        if rest:
            self.tail += rest
            self.dropped += len(rest)
            del self.tail[:-TAIL_BYTES]

    def text(self) -> str:
        hidden = self.dropped - len(self.tail)
        body = bytes(self.head)
        if hidden > 0:
            body += f"\n[... {hidden} bytes truncated ...]\n".encode()
        return (body + bytes(self.tail)).decode("utf-8", errors="replace")


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


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """Without a pid namespace: kill every process of the sandbox uid (catches setsid escapes)."""
    code = f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); os.kill(-1, 9)"
    subprocess.run([sys.executable, "-I", "-S", "-c", code], stderr=subprocess.DEVNULL, check=False)


def _pump(proc: subprocess.Popen, stdin: bytes, status_fd: int, deadline: float, cap: int):
    """Feed stdin, read stdout/stderr/status with caps, kill the group at the deadline."""
    sel = selectors.DefaultSelector()
    out, err, status = _CappedBuffer(cap), _CappedBuffer(cap), _CappedBuffer(1 << 20)
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, status_fd: status}
    for fd in sinks:
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd, sent = proc.stdin.fileno(), 0
    if stdin:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    try:  # wakes us when the launcher exits (Linux >= 5.3); else poll every 50 ms
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None
    timed_out, exited_at = False, None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                _killpg(proc.pid)  # still a zombie, so the group id cannot have been reused
                proc.wait()
                exited_at = now
            if exited_at is None and now >= deadline and not timed_out:
                _killpg(proc.pid)  # the launcher, the monitor (pid 1: its namespace dies) and the program
                timed_out = True
            open_reads = [fd for fd in sinks if fd in sel.get_map()]
            if exited_at is not None and (not open_reads or now - exited_at > 1.0):
                break  # after the exit, wait up to 1 s for the pipes to drain
            wait = deadline - now if exited_at is None else exited_at + 1.0 - now
            if pidfd is None or timed_out:
                wait = min(wait, 0.05) if wait > 0 else 0.05
            for key, _ in sel.select(max(0.0, wait)):
                fd = key.fd
                if fd == pidfd:
                    sel.unregister(fd)
                elif fd == stdin_fd:
                    try:
                        sent += os.write(fd, stdin[sent:sent + 65536])
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:  # the program stopped reading: drop the rest
                        sent = len(stdin)
                    if sent >= len(stdin):
                        sel.unregister(fd)
                        proc.stdin.close()
                else:
                    data = os.read(fd, 65536)
                    sinks[fd].add(data) if data else sel.unregister(fd)
    finally:
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        os.close(status_fd)
        if pidfd is not None:
            os.close(pidfd)
    messages, raw = {}, bytes(status.head)
    while len(raw) >= 4:
        n = int.from_bytes(raw[:4], "little")
        messages.update(marshal.loads(raw[4:4 + n]))
        raw = raw[4 + n:]
    return out, err, messages, timed_out


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
                [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), marshal.dumps(cfg).hex()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                env=cfg["env"], start_new_session=True, pass_fds=(status_w,))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        out, err, msg, timed_out = _pump(proc, data, status_r, start + timeout_s, max_output_bytes)
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
