"""The compiled decode step (engine/compiled.py) gives the eager engine's tokens.

A small random model with SmolLM2's tokenizer keeps compilation short: GQA,
QK-norm, a sliding-window layer, int4 linears and the int8 tied head, prompts
that cross an attention bucket boundary while decoding, batch 1 and a batch
whose rows sit at different positions and finish at different times.
"""
from __future__ import annotations

import pytest
import torch

from groundup.config import ModelConfig
from groundup.engine.compiled import BUCKET, CompiledDecode, compile_engine
from groundup.engine.engine import Engine, Request
from groundup.engine.quant import quantize_weights
from groundup.engine.sampling import SamplingParams
from groundup.model import Transformer


@pytest.fixture(scope="module")
def tiny(smollm2_path):
    from groundup.models import load_model

    _, tok = load_model(smollm2_path, dtype="fp32")
    cfg = ModelConfig(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32,
                      mlp_hidden=128, activation="swiglu", context_length=512, qk_norm=True,
                      sliding_window=24, sliding_window_pattern=2, tied_embeddings=True)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    model.eval()
    return quantize_weights(model, torch.float32, bits=4), tok


def tokens(engine, reqs):
    out: dict = {}
    for ev in engine.generate(reqs):
        out.setdefault(ev.index, []).append(ev.token)
    return [out[i] for i in range(len(reqs))]


def test_compiled_decode_equals_eager(tiny):
    model, tok = tiny
    prompt = list(range(100, 100 + BUCKET - 6))  # decoding crosses the first bucket boundary
    reqs = lambda: [Request(prompt, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)),
                    Request([5, 6, 7], SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)),
                    Request(prompt[:40], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))]
    eager = Engine(model, tok, max_batch=3, max_len=256)
    want_one, want_many = tokens(eager, reqs()[:1]), tokens(eager, reqs())
    fast = Engine(model, tok, max_batch=3, max_len=256)
    router = compile_engine(fast)
    assert isinstance(fast.forward, CompiledDecode) and router.calls > 0
    before = router.calls
    assert tokens(fast, reqs()[:1]) == want_one
    assert tokens(fast, reqs()) == want_many
    assert router.calls - before >= 15 + 15  # every decode step went through the compiled graph
    assert compile_engine(fast) is router  # idempotent
