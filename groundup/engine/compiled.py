"""One compiled graph per decode step: a removable layer over the engine's forward.

Eager decode runs ~190 small ATen calls per layer from Python; at batch 1 on a
2-core CPU that dispatch costs as much as the matmuls. `compile_engine(engine)`
replaces `engine.forward` with a router: one-token steps (decode, any batch
size) go through `torch.compile` of the model's own forward, with Inductor's
C++ wrapper so the whole step is one call; everything else (prefill, scoring)
stays eager.

To keep the graph static, the compiled step attends over a bucket of cache
positions (the smallest multiple of `BUCKET` covering every row) with a
position mask, and writes this step's keys/values by index instead of by Python
slicing — `DecodeCacheView` below. The batch size and the bucket length are
dynamic dimensions, so a served batch that grows and shrinks reuses two graphs
(batch 1, batch > 1) rather than compiling one per shape.

Compiling takes minutes the first time on a small CPU (Inductor writes and
builds C++); compiled code is cached under Inductor's cache directory, so later
processes start in seconds. Measured numbers are in README.md.
"""
from __future__ import annotations

import time

import torch

BUCKET = 128  # attention length granularity of the compiled step


class DecodeCacheView:
    """A `KVCache` seen by a one-token step over rows [0, B) with positions < `length`."""

    def __init__(self, cache, length: int) -> None:
        self.cache, self.length = cache, length

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor,
               slots, window: int | None, scale: float) -> torch.Tensor:
        from groundup.engine.kvcache import decode_attention

        B = q.shape[0]
        kc, vc = self.cache.k[layer][:B, :, :self.length], self.cache.v[layer][:B, :, :self.length]
        rows = torch.arange(B, device=q.device)
        kc[rows, :, input_pos] = k[:, :, 0]
        vc[rows, :, input_pos] = v[:, :, 0]
        kpos = torch.arange(self.length, device=q.device)[None, :]
        mask = kpos <= input_pos[:, None]
        if window is not None:
            mask &= (input_pos[:, None] - kpos) < window
        return decode_attention(q, kc, vc, scale, mask[:, None, None, :])


def _step(model, cache, tokens: torch.Tensor, input_pos: torch.Tensor, length: int) -> torch.Tensor:
    return model.forward(tokens, input_pos, DecodeCacheView(cache, length), None, last_only=True)


class CompiledDecode:
    """engine.forward replacement: compiled one-token steps, eager for the rest."""

    def __init__(self, model, eager, cpp_wrapper: bool = True) -> None:
        self.model, self.eager = model, eager
        # The model's modules are fixed once the engine holds them (projections already fused), so
        # their guards are skipped: checking every module attribute on each call cost ~15% at batch 1.
        self.compiled = torch.compile(_step, dynamic=True, options={
            "cpp_wrapper": cpp_wrapper, "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe})
        self.compile_s = 0.0
        self.calls = 0
        self._seen = None

    def __call__(self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None, cache=None, slots=None,
                 last_only: bool = False) -> torch.Tensor:
        if cache is None or tokens.shape[1] != 1 or not isinstance(slots, slice) or slots.start != 0:
            return self.eager(tokens, input_pos, cache, slots, last_only=last_only)
        if cache is not self._seen:  # its slot count and length stay symbolic: one graph for any engine size
            for t in cache.k + cache.v:
                torch._dynamo.maybe_mark_dynamic(t, 0)
                torch._dynamo.maybe_mark_dynamic(t, 2)
            self._seen = cache
        need = int(input_pos.max()) + 1
        length = min(cache.max_len, -(-need // BUCKET) * BUCKET)
        self.calls += 1
        return self.compiled(self.model, cache, tokens, input_pos, length)


def compile_engine(engine, cpp_wrapper: bool = True, warm: bool = True) -> CompiledDecode:
    """Route `engine`'s decode steps through a compiled graph; with `warm`, compile now (batch 1 and,
    when the engine batches, batch 2) so no request pays for it."""
    if isinstance(engine.forward, CompiledDecode):
        return engine.forward
    router = CompiledDecode(engine.model, engine.forward, cpp_wrapper)
    engine.forward = router
    if warm:
        t0 = time.perf_counter()
        _warm(engine, 1)
        if engine.max_batch > 1:
            _warm(engine, 2)
        router.compile_s = time.perf_counter() - t0
    return router


def _warm(engine, batch: int) -> None:
    from groundup.engine.engine import Request
    from groundup.engine.sampling import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    list(engine.generate([Request([1 + i, 2, 3], greedy) for i in range(batch)]))
