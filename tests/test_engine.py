"""Engine behaviour on the real SmolLM2: batching, streaming, stops, seeds, limits, int8."""
from __future__ import annotations

import pytest
import torch

from groundup.engine.engine import Engine, Request
from groundup.engine.sampling import SamplingParams
from groundup.errors import GroundupError
from groundup.models import load_model

PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea, there lived",
           "def fibonacci(n):"]


@pytest.fixture(scope="module")
def smol(smollm2_path):
    return load_model(smollm2_path, dtype="fp32")


def run(engine, reqs):
    out: dict[int, list] = {}
    for ev in engine.generate(reqs):
        out.setdefault(ev.index, []).append(ev)
    return [out[i] for i in range(len(out))]


def test_batched_equals_one_at_a_time_with_continuous_batching(smol):
    model, tok = smol
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    singles = [[e.token for e in run(Engine(model, tok, max_batch=1), [Request(p, greedy)])[0]] for p in PROMPTS]
    # max_batch=2 < 3 requests: the third joins when a row frees up
    batched = run(Engine(model, tok, max_batch=2), [Request(p, greedy) for p in PROMPTS])
    assert [[e.token for e in evs] for evs in batched] == singles
    assert all(len(s) == 12 and evs[-1].finish_reason == "length" for s, evs in zip(singles, batched))


def test_streamed_text_equals_decode_and_finishes_once(smol):
    model, tok = smol
    evs = run(Engine(model, tok), [Request("Tell me a story about a robot.", SamplingParams(temperature=0, max_tokens=30))])[0]
    text = "".join(e.text for e in evs)
    assert [e.finished for e in evs].count(True) == 1 and evs[-1].finished
    ids = [e.token for e in evs if e.token not in tok.eos_ids]
    assert text == tok.decode(ids)


def test_same_seed_same_output_different_seed_differs(smol):
    model, tok = smol
    eng = Engine(model, tok)
    p = lambda s: SamplingParams(temperature=1.0, top_p=0.95, seed=s, max_tokens=20, ignore_eos=True)
    a, b, c = (eng.generate_text(PROMPTS[1], p(s)) for s in (7, 7, 8))
    assert a == b and a != c


def test_stop_string_cuts_output(smol):
    model, tok = smol
    eng = Engine(model, tok)
    full = eng.generate_text(PROMPTS[2], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))
    stop = full.strip().split()[2]
    evs = run(eng, [Request(PROMPTS[2], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=[stop]))])[0]
    text = "".join(e.text for e in evs)
    assert evs[-1].finish_reason == "stop" and stop not in text and full.startswith(text)


def test_eos_stops_chat_answer(smol):
    model, tok = smol
    ids = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    evs = run(Engine(model, tok), [Request(ids, SamplingParams(temperature=0, max_tokens=60))])[0]
    text = "".join(e.text for e in evs)
    assert "Paris" in text
    assert evs[-1].finish_reason == "stop" and evs[-1].token in tok.eos_ids and "<|im_end|>" not in text


def test_prompt_longer_than_context_is_a_clear_error(smol):
    model, tok = smol
    eng = Engine(model, tok, max_len=64)
    with pytest.raises(GroundupError, match="context holds 64"):
        list(eng.generate(Request("word " * 200)))


def test_generation_stops_at_full_context(smol):
    model, tok = smol
    eng = Engine(model, tok, max_len=32)
    evs = run(eng, [Request(PROMPTS[1], SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))])[0]
    assert evs[-1].finish_reason == "length" and len(tok.encode(PROMPTS[1])) + len(evs) <= 32


def test_logprobs_are_log_softmax(smol):
    model, tok = smol
    evs = run(Engine(model, tok), [Request(PROMPTS[0], SamplingParams(temperature=0, max_tokens=3, logprobs=3))])[0]
    for e in evs:
        assert e.logprob is not None and e.logprob <= 0
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0][0] == e.token  # greedy: chosen = top-1
        assert abs(e.top_logprobs[0][1] - e.logprob) < 1e-5


def test_int8_weight_only_stays_close_to_fp32(smol, smollm2_path):
    model, tok = smol
    q, _ = load_model(smollm2_path, dtype="int8")
    ids = torch.tensor([tok.encode("The history of the Roman Empire spans many centuries, from the founding of")])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids)[0].float(), -1)
        lq = torch.log_softmax(q(ids)[0].float(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
    assert kl < 0.05, kl


def test_int4_kernel_matches_its_dequantized_weights_and_stays_close(smol, smollm2_path):
    from groundup.engine.int4 import DECODE_ROWS, Int4Linear

    torch.manual_seed(0)
    lin = Int4Linear.from_float(torch.randn(96, 64), torch.randn(96), torch.float32)
    x = torch.randn(3, 64)
    ref = torch.nn.functional.linear(x, lin.dequantized(torch.float32), lin.bias)
    assert ((lin(x) - ref).abs().max() / ref.abs().max()) < 0.01  # decode kernel (bf16 activations)
    big = torch.randn(DECODE_ROWS + 16, 64)  # the dense (prefill) path
    torch.testing.assert_close(lin(big), torch.nn.functional.linear(big, lin.dequantized(torch.float32), lin.bias))
    model, tok = smol
    q, _ = load_model(smollm2_path, dtype="int4")
    ids = torch.tensor([tok.encode("The history of the Roman Empire spans many centuries, from the founding of")])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids)[0].float(), -1)
        lq = torch.log_softmax(q(ids)[0].float(), -1)
    assert (lp.exp() * (lp - lq)).sum(-1).mean().item() < 0.02
    # fused int4 projections decode the same greedy text as the unfused model
    p = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    unfused = Engine(q, tok, fuse=False).generate_text(PROMPTS[0], p)
    assert Engine(q, tok, fuse=True).generate_text(PROMPTS[0], p) == unfused
    assert q.layers[0].attn.wqkv is not None


def test_int8_head_top_logits_exact(smollm2_path):
    """The int8 LM head's kernel returns bf16; its top logits are recomputed exactly, so greedy
    decoding does not flip between near-tied tokens (this prompt's top two differ by 0.04)."""
    model, tok = load_model(str(smollm2_path), dtype="int4")
    ids = torch.tensor([tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])])
    with torch.inference_mode():
        full = model(ids)[0, -1]  # many rows: dense path, full precision
        one = model(ids, last_only=True)[0, -1]  # one row: the int8 kernel + refinement
    top = full.topk(5).indices
    assert torch.equal(one.topk(5).indices, top)
    assert torch.allclose(one[top], full[top], atol=1e-3)
