"""GET /metrics: Prometheus text exposition of what the server has done and is doing."""
from __future__ import annotations

import threading
import time


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint, status) -> count
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self._recent: list[tuple[float, int]] = []  # (time, generated tokens) for tokens/s

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1

    def observe(self, prompt_tokens: int, generated_tokens: int) -> None:
        now = time.time()
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.generated_tokens += generated_tokens
            self._recent = [(t, n) for t, n in self._recent if now - t < 60] + [(now, generated_tokens)]

    def tokens_per_s(self) -> float:
        now = time.time()
        with self._lock:
            recent = [n for t, n in self._recent if now - t < 60]
        return sum(recent) / 60.0

    def render(self, models: dict) -> str:
        lines = [
            "# HELP groundup_requests_total HTTP requests by endpoint and status.",
            "# TYPE groundup_requests_total counter",
        ]
        with self._lock:
            for (ep, status), n in sorted(self.requests.items()):
                lines.append(f'groundup_requests_total{{endpoint="{ep}",status="{status}"}} {n}')
            lines += [
                "# TYPE groundup_prompt_tokens_total counter", f"groundup_prompt_tokens_total {self.prompt_tokens}",
                "# TYPE groundup_generated_tokens_total counter",
                f"groundup_generated_tokens_total {self.generated_tokens}",
            ]
        lines += ["# HELP groundup_generated_tokens_per_second Generated tokens per second over the last minute.",
                  "# TYPE groundup_generated_tokens_per_second gauge",
                  f"groundup_generated_tokens_per_second {self.tokens_per_s():.3f}"]
        for kind, help_ in (("queue_depth", "Requests waiting for a batch slot."),
                            ("running", "Sequences in the running batch."),
                            ("kv_cache_usage", "Fraction of KV-cache positions in use by running sequences."),
                            ("prefix_cache_hits_total", "Prompts that reused a cached prefix."),
                            ("prefix_cached_tokens_total", "Prompt tokens not recomputed thanks to the prefix cache.")):
            lines += [f"# HELP groundup_{kind} {help_}",
                      f"# TYPE groundup_{kind} {'counter' if kind.endswith('_total') else 'gauge'}"]
            for name, m in models.items():
                eng = m.engine
                value = {
                    "queue_depth": m.scheduler.queue_depth(),
                    "running": m.scheduler.running(),
                    "kv_cache_usage": round(sum(s.pos for s in list(eng.active)) / (eng.max_batch * eng.max_len), 6),
                    "prefix_cache_hits_total": eng.prefix.hits,
                    "prefix_cached_tokens_total": eng.stats.cached_prompt_tokens,
                }[kind]
                lines.append(f'groundup_{kind}{{model="{name}"}} {value}')
        lines += ["# TYPE groundup_uptime_seconds gauge", f"groundup_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"
