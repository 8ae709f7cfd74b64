"""The parent's side of a running sandbox: feed stdin, read capped output, enforce the deadline.

`pump(proc, stdin, status_fd, deadline, cap)` drives the launcher process that
groundup/eval/sandbox.py started: it writes stdin without blocking, reads stdout
and stderr through `selectors` into `CappedBuffer`s (the first `cap` bytes plus
the last TAIL_BYTES; the rest is read and dropped, so a program printing
gigabytes never blocks or fills our memory), collects the launcher's status
messages, and SIGKILLs the whole process group at the deadline.
"""
from __future__ import annotations

import marshal
import os
import selectors
import signal
import subprocess
import time

TAIL_BYTES = 4096


class CappedBuffer:
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


def killpg(pgid: int) -> None:
    """SIGKILL a process group, if it is still there."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_messages(raw: bytes) -> dict:
    """Merge the launcher's status messages: 4-byte little-endian length, then a marshal dict."""
    messages: dict = {}
    while len(raw) >= 4:
        n = int.from_bytes(raw[:4], "little")
        messages.update(marshal.loads(raw[4:4 + n]))
        raw = raw[4 + n:]
    return messages


def pump(proc: subprocess.Popen, stdin: bytes, status_fd: int, deadline: float,
         cap: int) -> tuple[CappedBuffer, CappedBuffer, dict, bool]:
    """Feed stdin, read stdout/stderr/status with caps, kill the group at the deadline."""
    sel = selectors.DefaultSelector()
    out, err, status = CappedBuffer(cap), CappedBuffer(cap), CappedBuffer(1 << 20)
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
                killpg(proc.pid)  # still a zombie, so the group id cannot have been reused
                proc.wait()
                exited_at = now
            if exited_at is None and now >= deadline and not timed_out:
                killpg(proc.pid)  # the launcher, the monitor (pid 1: its namespace dies) and the program
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
    return out, err, read_messages(bytes(status.head)), timed_out
