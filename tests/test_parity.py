"""groundup vs llama.cpp (llama-cpp-python) on the same GGUF files.

Teacher-forced next-token distributions over >= 1,000 tokens of real text:
mean KL(llama.cpp || groundup) <= 0.01 nats/token and the same argmax on
>= 99.5% of positions where llama.cpp's top-2 logit margin is >= 0.5.
Greedy chat continuations: identical up to the first position where
llama.cpp's own margin drops below 0.5 (a near-tie that legitimately flips
under llama.cpp's fp16 KV cache and quantized activations).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from groundup.engine.engine import Engine, Request
from groundup.engine.sampling import SamplingParams
from groundup.models import load_model
from tests.conftest import llama_cpp_or_skip

pytestmark = pytest.mark.reference

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KL_MAX, AGREE_MIN, MARGIN = 0.01, 0.995, 0.5
# int8 re-quantizes already-quantized weights (per-row int8 of Q4/Q5/Q8 blocks): its own error adds to
# the reference gap (measured: SmolLM2 0.0060, Gemma 3 0.0098 — its 262k x 640 head is the int8 cost)
KL_MAX_INT8 = 0.02
CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the square of a number.",
    "Give me three tips for staying healthy.",
]


def real_text(min_chars: int = 6000) -> str:
    p = SHARED / "prose" / "wikitext-2-raw"
    files = sorted(p.glob("*")) if p.exists() else []
    if not files:
        f = SHARED / "tinyshakespeare" / "input.txt"
        if not f.exists():
            pytest.skip(f"no real text under {SHARED} (needs ../shared/data)")
        files = [f]
    text = files[0].read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    start = len(text) // 3
    return text[start:start + min_chars]


def llama_ref(path: Path, n_ctx: int = 1200):
    llama_cpp = llama_cpp_or_skip()
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, n_batch=512, logits_all=True,
                           verbose=False, seed=0)


def ref_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def our_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0].float()


def kl_and_agreement(ref: np.ndarray, ours: torch.Tensor) -> tuple[float, float, int]:
    r = torch.from_numpy(ref)
    lp_r, lp_o = torch.log_softmax(r, -1), torch.log_softmax(ours, -1)
    kl = (lp_r.exp() * (lp_r - lp_o)).sum(-1)
    top2 = r.topk(2, dim=-1).values
    confident = (top2[:, 0] - top2[:, 1]) >= MARGIN
    agree = (r.argmax(-1) == ours.argmax(-1))[confident].float().mean().item()
    return kl.mean().item(), agree, int(confident.sum())


def ref_greedy(llm, prompt_ids: list[int], n: int) -> tuple[list[int], list[float]]:
    llm.reset()
    llm.eval(prompt_ids)
    out, margins = [], []
    for _ in range(n):
        s = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(s)[-2:]
        out.append(int(top[1]))
        margins.append(float(s[top[1]] - s[top[0]]))
        if out[-1] == llm.token_eos():
            break
        llm.eval([out[-1]])
    return out, margins


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def pair(request, smollm2_path, gemma3_path):
    path = smollm2_path if request.param == "smollm2" else gemma3_path
    llm = llama_ref(path)
    yield request.param, path, llm
    llm.close()


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_teacher_forced_distributions_match_llama_cpp(pair, dtype):
    name, path, llm = pair
    model, tok = load_model(path, dtype=dtype)
    ids = tok.encode(real_text(), add_bos=True)[:1100]
    assert len(ids) >= 1000
    kl, agree, n_conf = kl_and_agreement(ref_logits(llm, ids), our_logits(model, ids))
    print(f"{name} {dtype}: mean KL {kl:.5f} nats/token, argmax agreement {agree:.4f} on {n_conf} confident positions")
    assert kl <= (KL_MAX_INT8 if dtype == "int8" else KL_MAX)
    assert agree >= AGREE_MIN


def test_greedy_chat_continuations_match_llama_cpp(pair):
    name, path, llm = pair
    model, tok = load_model(path)
    engine = Engine(model, tok, max_batch=len(CHAT_PROMPTS))
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in CHAT_PROMPTS]
    params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=False)
    ours: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    for ev in engine.generate([Request(p, params) for p in prompts]):  # batched: exercises different lengths
        ours[ev.index].append(ev.token)
    for i, p in enumerate(prompts):
        ref, margins = ref_greedy(llm, p, 48)
        for j, (a, b) in enumerate(zip(ref, ours[i])):
            if margins[j] < MARGIN:
                break  # near-tie in llama.cpp: divergence from here on is legitimate
            assert a == b, f"{name} prompt {i}: token {j} differs ({tok.decode(ref[:j+1])!r} vs {tok.decode(ours[i][:j+1])!r})"
