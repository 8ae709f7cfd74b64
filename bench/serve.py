"""Serving benchmark: `groundup serve` vs llama.cpp's `llama-server`, streaming chat clients, one run.

For 1, 4 and 16 concurrent clients (each sending its requests one after another) it
measures aggregate generated tokens/s (all tokens / wall time of the level) and p50/p95
time-to-first-token (request sent -> first non-empty content delta), on the same GGUF
with 2 threads. The peer is llama-server with continuous batching and 16 slots (built
once by bench/llama_server.py). The two servers run one at a time, never together (the
machine has 2 cores), on free loopback ports, and are stopped at the end or on Ctrl-C.

Both get the same prompts, greedy decoding, fixed `max_tokens` and `ignore_eos`, so both
generate the same number of tokens; the token count comes from the final `usage` chunk
(`stream_options.include_usage`), else from the number of content deltas. Each request's
user message is one of 16 fixed prompts behind a tag unique to that request, so no
request is answered from a cached prompt (both may reuse the shared chat-template prefix).

Run it on a quiet machine: when another process competes for the 2 cores, llama-server
(ggml's spinning thread pool) slowed 10-20x here, which flatters groundup's ratios; the
load average before each level is recorded in the JSON.

    python -m bench.serve [--clients 1,4,16] [--requests-per-client 4] [--max-tokens 128]
                          [--only groundup|llama] [--model smollm2-135m-instruct]

Prints a table with the ratios groundup/llama and writes bench/results/serve-<date>.json
and .png (throughput and p95 TTFT vs clients).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.serve_clients import run_level, summarize

THREADS = 2
SLOTS = 16
DEFAULT_MODEL = "smollm2-135m-instruct"
RESULTS = Path(__file__).resolve().parent / "results"
HEALTH_TIMEOUT_S = 300.0

# ---- servers -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess in its own session, logging to a file; stopped (TERM, then KILL) on exit."""

    def __init__(self, name: str, cmd: list[str], port: int, log_path: Path, env: dict | None = None):
        self.name, self.cmd, self.port, self.log_path, self.env = name, cmd, port, log_path, env
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        print(f"[{self.name}] $ {shlex.join(self.cmd)}", flush=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=self.env)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """Poll GET /health (200 = ready; llama-server answers 503 while loading)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up; log {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def llama_command(binary: Path, gguf: Path, port: int, max_tokens: int, extra: list[str]) -> list[str]:
    """llama-server with 16 slots (a KV buffer each; continuous batching is on by default). Measured
    here (one run each, quiet machine, 32 tokens): `--kv-unified` was slower at 1/4/16 clients
    (53/67/71 tok/s vs 62/89/91)."""
    ctx = SLOTS * (max_tokens + 256)  # per slot: the prompt with its chat template, plus the answer
    return [str(binary), "-m", str(gguf), "-t", str(THREADS), "-tb", str(THREADS), "-np", str(SLOTS),
            "-c", str(ctx), "--host", "127.0.0.1", "--port", str(port), *extra]


def groundup_command(model: str, port: int, extra: list[str]) -> list[str] | None:
    """The `groundup serve` command line, or None when this checkout has no `groundup serve` yet."""
    try:
        r = subprocess.run([sys.executable, "-m", "groundup", "serve", "--help"], capture_output=True,
                           text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    cmd = [sys.executable, "-m", "groundup", "serve", "--model", model, "--port", str(port)]
    for flag, value in (("--host", "127.0.0.1"), ("--threads", str(THREADS)), ("--max-batch", str(SLOTS))):
        if flag in r.stdout and flag not in extra:
            cmd += [flag, value]
    return cmd + extra


def bench_server(server: Server, levels: list[int], per_client: int, max_tokens: int, model: str) -> dict:
    """Start `server`, warm it up, run every concurrency level; the server is stopped on return."""
    with server:
        t = time.perf_counter()
        server.wait_healthy()
        print(f"[{server.name}] ready in {time.perf_counter() - t:.1f} s; warming up", flush=True)
        asyncio.run(run_level(server.base_url, 1, 1, 8, model, "warm-up "))
        asyncio.run(run_level(server.base_url, max(levels), 1, 4, model, "warm-up "))
        out: dict = {"command": server.cmd, "levels": {}}
        for n in levels:
            load = os.getloadavg()[0]
            results, wall = asyncio.run(run_level(server.base_url, n, per_client, max_tokens, model, f"{n}:"))
            s = summarize(results, wall, n)
            s["loadavg_before"] = load
            s["per_request"] = [asdict(r) for r in results]
            out["levels"][str(n)] = s
            err = f", {s['errors']} errors (first: {s['first_error']})" if s["errors"] else ""
            print(f"[{server.name}] {n:>2} clients: {s['tok_s']:7.1f} tok/s, TTFT p50 {s['ttft_p50']:.3f} s "
                  f"p95 {s['ttft_p95']:.3f} s, {s['tokens_per_request']:.0f} tok/request, "
                  f"{wall:.1f} s{err}", flush=True)
    return out


# ---- report ------------------------------------------------------------------------------------

def ratios(results: dict, levels: list[int]) -> dict:
    """groundup/llama per level: throughput ratio (higher is better), p95 TTFT ratio (lower is better)."""
    if "groundup" not in results or "llama" not in results:
        return {}
    out = {}
    for n in levels:
        g, l = results["groundup"]["levels"][str(n)], results["llama"]["levels"][str(n)]
        out[str(n)] = {"tok_s": g["tok_s"] / l["tok_s"] if l["tok_s"] else math.nan,
                       "ttft_p95": g["ttft_p95"] / l["ttft_p95"] if l["ttft_p95"] else math.nan}
    return out


def print_table(results: dict, levels: list[int], rat: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [n for n in ("llama", "groundup") if n in results]
    table = Table(title="streaming chat completions: aggregate tok/s and time to first token (s)")
    table.add_column("clients", justify="right")
    for n in names:
        for col in ("tok/s", "TTFT p50", "TTFT p95"):
            table.add_column(f"{n}\n{col}", justify="right")
    if rat:
        table.add_column("g/l\ntok/s", justify="right")
        table.add_column("g/l\np95 TTFT", justify="right")
    for lv in levels:
        row = [str(lv)]
        for n in names:
            s = results[n]["levels"][str(lv)]
            row += [f"{s['tok_s']:.1f}", f"{s['ttft_p50']:.3f}", f"{s['ttft_p95']:.3f}"]
        if rat:
            row += [f"{rat[str(lv)]['tok_s']:.2f}x", f"{rat[str(lv)]['ttft_p95']:.2f}x"]
        table.add_row(*row)
    console = Console()
    (console if console.is_terminal else Console(width=120)).print(table)
    if rat:
        checks = []
        if str(SLOTS) in rat:
            checks.append((f"throughput at {SLOTS} clients >= 3x llama-server", rat[str(SLOTS)]["tok_s"] >= 3.0))
            checks.append((f"p95 TTFT at {SLOTS} clients below llama-server's", rat[str(SLOTS)]["ttft_p95"] < 1.0))
        if "1" in rat:
            checks.append(("throughput at 1 client >= 1x llama-server", rat["1"]["tok_s"] >= 1.0))
        for text, ok in checks:
            print(f"  [{'met' if ok else 'NOT met'}] {text}")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plot(results: dict, levels: list[int], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("llama", "s--"), ("groundup", "o-")):
        if name not in results:
            continue
        lv = results[name]["levels"]
        label = "llama-server" if name == "llama" else "groundup serve"
        ax1.plot(levels, [lv[str(n)]["tok_s"] for n in levels], style, label=label)
        ax2.plot(levels, [lv[str(n)]["ttft_p95"] for n in levels], style, label=label)
    for ax, ylabel in ((ax1, "aggregate generated tokens/s"), (ax2, "p95 time to first token (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("concurrent streaming clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"serving: same GGUF, {THREADS} threads")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def json_safe(x):
    """`x` with NaN/inf floats replaced by None, so the file is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_safe(v) for v in x]
    return x


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# ---- main --------------------------------------------------------------------------------------

def resolve_model(name: str) -> Path:
    from groundup.errors import GroundupError
    from groundup.registry import cached_path

    try:
        p = cached_path(name)
    except GroundupError:  # not a registry name: a path
        p = None
    if p is None and Path(name).is_file():
        p = Path(name)
    if p is None:
        raise SystemExit(f"error: model {name!r} is not pulled; run `groundup pull {name}`")
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels (default 1,4,16)")
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--only", choices=["groundup", "llama"], default=None)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="registry name or GGUF path (same file for both)")
    ap.add_argument("--llama-server", default=None, help="llama-server binary (default: build/cached one)")
    ap.add_argument("--groundup-args", default="", help="extra arguments for `groundup serve`")
    ap.add_argument("--llama-args", default="", help="extra arguments for llama-server")
    ap.add_argument("--out", default=str(RESULTS), help="directory for the JSON and PNG (default bench/results)")
    args = ap.parse_args(argv)
    levels = sorted({int(x) for x in args.clients.split(",") if x.strip()})
    gguf = resolve_model(args.model)
    served = os.path.basename(args.model.rstrip("/"))  # the model name `groundup serve` answers to
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the servers like Ctrl-C does
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    results: dict = {}
    try:
        if args.only in (None, "llama"):
            from bench.llama_server import ensure_llama_server

            binary = Path(args.llama_server) if args.llama_server else ensure_llama_server()
            port = free_port()
            cmd = llama_command(binary, gguf, port, args.max_tokens, shlex.split(args.llama_args))
            server = Server("llama", cmd, port, logs / "llama.log")
            results["llama"] = bench_server(server, levels, args.requests_per_client, args.max_tokens, served)
        if args.only in (None, "groundup"):
            port = free_port()
            cmd = groundup_command(args.model, port, shlex.split(args.groundup_args))
            if cmd is None:
                print("[groundup] skipped: this checkout has no `groundup serve` yet "
                      "(`python -m groundup serve --help` failed)", flush=True)
            else:
                server = Server("groundup", cmd, port, logs / "groundup.log", env)
                results["groundup"] = bench_server(server, levels, args.requests_per_client, args.max_tokens,
                                                   served)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not results:
        return 1
    rat = ratios(results, levels)
    print_table(results, levels, rat)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / time.strftime("serve-%Y%m%d-%H%M%S")
    record = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": str(gguf), "threads": THREADS, "slots": SLOTS,
        "max_tokens": args.max_tokens, "requests_per_client": args.requests_per_client,
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "results": results, "ratios_groundup_over_llama": rat, "server_logs": str(logs),
    }
    write_atomic(stem.with_suffix(".json"), json.dumps(json_safe(record), indent=1).encode())
    plot(results, levels, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png (server logs in {logs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
