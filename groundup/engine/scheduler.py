"""Scheduler: one thread that owns an Engine and lets requests join and leave its running batch.

Callers (the HTTP server, LocalLLM) `submit` a request with a sink — a function
called from the engine thread with each TokenEvent, or with an exception if
the request fails — and may `cancel` it at any time (a client disconnects).
Between steps the thread takes new requests, cancellations and `call`s (work
that needs the model but not the batch, such as scoring a text for
`echo` + `logprobs`), so the model is only ever used from this one thread.
The queue is bounded: beyond `max_queue` waiting requests, `submit` raises
`QueueFull` and the server answers 503 instead of accepting unbounded work.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from groundup.engine.engine import Engine, Request, TokenEvent
from groundup.errors import GroundupError

Sink = Callable[[TokenEvent | BaseException], None]


class QueueFull(GroundupError):
    pass


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._cv = threading.Condition()
        self._inbox: deque[tuple] = deque()
        self._sinks: dict[int, Sink] = {}
        self._ids = itertools.count()
        self._closing = False
        self.steps = 0
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name="groundup-engine", daemon=True)
        self._thread.start()

    # -- called from any thread -------------------------------------------
    def submit(self, request: Request, sink: Sink) -> int:
        """Queue a request; returns its key (for cancel). Raises QueueFull when the queue is full."""
        with self._cv:
            if self.queue_depth() >= self.max_queue:
                raise QueueFull(f"server busy: {self.max_queue} requests already waiting; retry later")
            key = next(self._ids)
            self._inbox.append(("add", key, request, sink))
            self._cv.notify()
        return key

    def cancel(self, key: int) -> None:
        with self._cv:
            self._inbox.append(("cancel", key))
            self._cv.notify()

    def call(self, fn: Callable[[Engine], Any]) -> Future:
        """Run fn(engine) on the engine thread between steps; returns a Future of its result."""
        fut: Future = Future()
        with self._cv:
            self._inbox.append(("call", fn, fut))
            self._cv.notify()
        return fut

    def queue_depth(self) -> int:
        """Requests accepted but not yet running."""
        return len(self.engine.waiting) + sum(1 for m in self._inbox if m[0] == "add")

    def running(self) -> int:
        return len(self.engine.active)

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout=10)

    # -- the engine thread ---------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._inbox or self.engine.has_work() or self._closing):
                    self._cv.wait()
                if self._closing:
                    self._fail_all(GroundupError("server shutting down"))
                    return
                inbox, self._inbox = self._inbox, deque()
            for msg in inbox:
                self._handle(msg)
            if not self.engine.has_work():
                continue
            t0 = time.perf_counter()
            try:
                while (ev := self.engine.admit_next()) is not None:
                    self._emit([ev])  # first tokens go out as each prefill ends
                    self._take_cancels()
                events = self.engine.decode()
            except Exception as e:  # a failed step must not kill the server: fail the batch, carry on
                self._fail_all(e)
                continue
            self.steps += 1
            self.busy_s += time.perf_counter() - t0
            self._emit(events)

    def _emit(self, events: list[TokenEvent]) -> None:
        for ev in events:
            sink = self._sinks.get(ev.index)
            if sink is not None:
                if ev.finished:
                    del self._sinks[ev.index]
                _deliver(sink, ev)

    def _take_cancels(self) -> None:
        """Apply cancellations that arrived during a prefill (new requests wait for the loop)."""
        with self._cv:
            cancels = [m for m in self._inbox if m[0] == "cancel"]
            if not cancels:
                return
            self._inbox = deque(m for m in self._inbox if m[0] != "cancel")
        for m in cancels:
            self._handle(m)

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "add":
            _, key, request, sink = msg
            try:
                self.engine.add(request, key)
                self._sinks[key] = sink
            except Exception as e:
                _deliver(sink, e)
        elif kind == "cancel":
            if self._sinks.pop(msg[1], None) is not None:
                self.engine.cancel(msg[1])
        else:
            _, fn, fut = msg
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self.engine))
                except Exception as e:
                    fut.set_exception(e)

    def _fail_all(self, err: BaseException) -> None:
        for key, sink in list(self._sinks.items()):
            self.engine.cancel(key)
            _deliver(sink, err)
        self._sinks.clear()
        self.engine.waiting.clear()
        self.engine.active.clear()


def _deliver(sink: Sink, item: TokenEvent | BaseException) -> None:
    try:
        sink(item)
    except Exception:  # a broken consumer (closed event loop) must not stop the engine thread
        pass
