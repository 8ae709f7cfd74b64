"""The sandbox's launcher: the part of the sandbox that runs inside the child, before the program.

groundup/eval/sandbox.py starts this file *by path* as `python -I -S -B
sandbox_launcher.py CONFIG` (CONFIG: a marshal dict, hex-encoded) in its own
session/process group with a scrubbed environment. It is never imported by the
parent. Here:

- the launcher unshares network, pid, mount, IPC and UTS namespaces (as root
  directly; otherwise inside a new user namespace when the kernel allows it)
  and forks a monitor that is pid 1 of the new pid namespace;
- the monitor makes `/` read-only and nosuid, mounts private tmpfs over /tmp,
  /var/tmp, /dev/shm, /root, /home and /run (re-binding the Python install and
  the work directory), mounts a fresh /proc, then forks the program;
- the program sets rlimits (CPU, address space, file size, processes, open
  files, no core files), drops to a fresh unprivileged uid when we are root,
  sets no_new_privs, joins a new session keyring and execs.

The monitor reports on CONFIG's `status_fd` as length-prefixed marshal dicts
(4-byte little-endian length, then the dict): first `{"isolation": [...]}` (or
with `"error"`), then `{"status", "cpu_s", "max_rss_kb"}` when the program has
exited; sandbox_io.read_messages decodes them. Only builtin modules and ctypes
are imported, so a fresh interpreter starts fast and the sandbox uid needs no
access to the rest of the standard library.
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


if __name__ == "__main__":  # run by path from sandbox.py; never imported
    _launcher_main()
    os._exit(0)
