"""Tests for groundup.engine.sampling: the logit-processing chain and the draw."""
from __future__ import annotations

import math

import pytest
import torch

from groundup.engine import sampling
from groundup.engine.sampling import SamplingParams, SequenceSampler, sample_batch
from groundup.errors import GroundupError

V = 1000


@pytest.fixture(autouse=True)
def _one_thread():
    """The ops here are small; one intra-op thread keeps the tests fast and
    steady on a busy machine (OpenMP stalls when the second core is taken)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def small_blocks(monkeypatch):
    """Shrink the chunk / histogram sizes so small vocabs take the long-vocab paths."""
    monkeypatch.setattr(sampling, "_CHUNK", 16)
    monkeypatch.setattr(sampling, "_TOPK_MAX", 32)
    monkeypatch.setattr(sampling, "_HIST_BINS", 16)
    monkeypatch.setattr(sampling, "_SORT_MAX", 64)


def rand_logits(seed: int, v: int = V, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(v, generator=torch.Generator().manual_seed(seed)) * scale


def sampler(v: int = V, prompt: list[int] | None = None, **kw) -> SequenceSampler:
    return SequenceSampler(SamplingParams(**kw), v, prompt or [])


def draws(s: SequenceSampler, logits: torch.Tensor, n: int) -> list[int]:
    return [s.sample(logits) for _ in range(n)]


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# -- determinism ----------------------------------------------------------------------
def test_same_seed_same_sequence_different_seed_differs():
    def run(seed: int) -> list[int]:
        s = sampler(seed=seed, temperature=1.0, top_p=0.95, repetition_penalty=1.1)
        out = []
        for step in range(100):
            t = s.sample(rand_logits(step, scale=1.0))
            s.accept(t)
            out.append(t)
        return out

    a, b, c = run(1234), run(1234), run(99)
    assert a == b
    assert a != c
    assert len(set(a)) > 10  # genuinely random draws, not a degenerate constant


def test_unseeded_samplers_differ():
    lg = rand_logits(0, scale=0.5)
    assert draws(sampler(), lg, 50) != draws(sampler(), lg, 50)


# -- greedy ---------------------------------------------------------------------------
def test_greedy_is_argmax_and_uses_no_rng():
    s = sampler(temperature=0.0, seed=7)
    state = s.generator.get_state()
    for i in range(20):
        lg = rand_logits(i)
        assert s.sample(lg) == int(lg.argmax())
    assert torch.equal(s.generator.get_state(), state)


def test_top_k_1_equals_greedy():
    s, g = sampler(temperature=1.5, top_k=1, seed=3), sampler(temperature=0.0)
    for i in range(20):
        lg = rand_logits(i, scale=0.3)
        assert s.sample(lg) == g.sample(lg) == int(lg.argmax())


def test_greedy_applies_penalties_before_argmax():
    lg = torch.zeros(V)
    lg[5], lg[6] = 2.0, 1.5
    s = sampler(temperature=0.0, prompt=[5], repetition_penalty=2.0)  # 2.0 -> 1.0 < 1.5
    assert s.sample(lg) == 6


# -- top-k / top-p / min-p ------------------------------------------------------------
def test_top_k_keeps_exactly_k_largest():
    lg = rand_logits(1)
    out = sampler(top_k=10).process(lg)
    ids = torch.isfinite(out).nonzero().squeeze(1)
    assert set(ids.tolist()) == set(torch.topk(lg, 10).indices.tolist())
    assert torch.allclose(out[ids], lg[ids])


@pytest.mark.parametrize("top_k", [0, 50])
def test_top_p_tiny_keeps_only_argmax(top_k):
    lg = rand_logits(2, scale=0.5)
    s = sampler(top_p=1e-6, top_k=top_k, seed=0)
    out = s.process(lg)
    assert torch.isfinite(out).sum() == 1 and torch.isfinite(out[lg.argmax()])
    assert set(draws(s, lg, 50)) == {int(lg.argmax())}


@pytest.mark.parametrize("top_p,expect", [
    (0.45, {0}), (0.7, {0, 1}), (0.85, {0, 1, 2}), (0.99, {0, 1, 2, 3}),
])
def test_top_p_smallest_set_reaching_mass(top_p, expect):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    out = sampler(v=4, top_p=top_p).process(probs.log())
    assert set(torch.isfinite(out).nonzero().squeeze(1).tolist()) == expect


def nucleus_reference(lg: torch.Tensor, T: float, top_p: float) -> set[int]:
    probs = torch.softmax(lg.double() / T, 0)
    sp, si = torch.sort(probs, descending=True)
    return set(si[: int(((sp.cumsum(0) - sp) < top_p).sum())].tolist())


def kept(out: torch.Tensor) -> set[int]:
    return set(torch.isfinite(out).nonzero().squeeze(1).tolist())


@pytest.mark.parametrize("scale,masked", [
    (5.0, False),  # peaked: nucleus found by one topk
    (0.3, False),  # flat: histogram threshold, boundary bin sorted
    (0.001, False),  # nearly uniform: histogram refined (several levels) before sorting
    (0.5, True),  # half the vocab at -inf (e.g. a grammar mask)
])
def test_top_p_matches_full_sort_reference(small_blocks, scale, masked):
    """The topk / histogram nucleus equals the textbook sort-and-cumsum definition."""
    v, T, top_p = 4000, 0.8, 0.9
    lg = rand_logits(3, v=v, scale=scale)
    if masked:
        lg[::2] = float("-inf")
    ref = nucleus_reference(lg, T, top_p)
    s = sampler(v=v, temperature=T, top_p=top_p, seed=0)
    for _ in range(2):  # the second call starts from the remembered topk size
        got = kept(s.process(lg))
        assert len(got ^ ref) <= 1  # float32 vs float64 may differ on the boundary token
        assert set(draws(s, lg, 20)) <= got
    assert (s._k_hint == 0) == (scale != 5.0)  # the flat cases did go to the histogram


def test_top_p_real_sizes_match_reference():
    """One call with the real constants at a real vocab size (flat, then peaked)."""
    v, T, top_p = 49_152, 0.8, 0.9
    for scale in (0.3, 3.0):
        lg = rand_logits(9, v=v, scale=scale)
        got = kept(sampler(v=v, temperature=T, top_p=top_p).process(lg))
        assert len(got ^ nucleus_reference(lg, T, top_p)) <= 1


@pytest.mark.parametrize("top_k", [0, 200])
def test_min_p_masks_exactly_tokens_below_threshold(top_k):
    lg, T, min_p = rand_logits(4), 0.7, 0.05
    s = sampler(temperature=T, min_p=min_p, top_k=top_k)
    out = s.process(lg)
    probs = torch.softmax(lg / T, 0)
    expect = probs >= min_p * probs.max()
    if top_k:
        expect &= lg >= torch.topk(lg, top_k).values[-1]
    assert torch.equal(torch.isfinite(out), expect)
    assert 1 < int(expect.sum()) < V  # the threshold actually cuts
    assert torch.allclose(out[expect], lg[expect] / T)
    assert all(expect[t] for t in draws(s, lg, 200))


def test_min_p_after_flat_top_p(small_blocks):
    """min_p on the whole-vocab weights the flat top-p path leaves."""
    v, T = 4000, 0.8
    lg = rand_logits(10, v=v, scale=0.3)
    s = sampler(v=v, temperature=T, top_p=0.9, min_p=0.5, seed=0)
    probs = torch.softmax(lg / T, 0)
    ref = nucleus_reference(lg, T, 0.9) & set((probs >= 0.5 * probs.max()).nonzero().squeeze(1).tolist())
    got = kept(s.process(lg))
    assert s._k_hint == 0 and 1 < len(ref) < 2000  # took the histogram path, min_p cut further
    assert len(got ^ ref) <= 1
    assert set(draws(s, lg, 50)) <= got


def test_half_precision_logits():
    lg = rand_logits(11).to(torch.bfloat16)
    s = sampler(temperature=0.7, top_k=20, seed=0, repetition_penalty=1.2, prompt=[1])
    out = s.process(lg)
    assert out.dtype == torch.float32 and torch.isfinite(out).sum() == 20
    assert sampler(temperature=0.0).sample(lg) == int(lg.float().argmax())
    assert sample_batch([sampler(temperature=0.0)] * 2, torch.stack([lg, lg])) == [int(lg.argmax())] * 2


# -- penalties and bias ---------------------------------------------------------------
def test_repetition_penalty_positive_and_negative_logits():
    lg = torch.zeros(V)
    lg[10], lg[20], lg[30] = 2.0, -1.0, 2.0
    s = sampler(prompt=[10, 20, 10], repetition_penalty=2.0, temperature=1.0)
    out = s.process(lg)
    assert out[10] == 1.0 and out[20] == -2.0 and out[30] == 2.0  # 30 unseen
    p0, p1 = torch.softmax(lg, 0), torch.softmax(out, 0)
    assert p1[10] < p0[10] and p1[20] < p0[20]
    s.accept(30)  # generated tokens count as seen too
    assert s.process(lg)[30] == 1.0
    with pytest.raises(ValueError):
        s.accept(V)


def test_presence_and_frequency_arithmetic_exact():
    lg = rand_logits(5)
    s = sampler(prompt=[7, 8], presence_penalty=0.5, frequency_penalty=0.25, temperature=1.0)
    for t in [3, 3, 5, 3]:
        s.accept(t)
    out = s.process(lg)
    expect = lg.clone()
    expect[3] -= 0.5 + 3 * 0.25
    expect[5] -= 0.5 + 1 * 0.25
    assert torch.equal(out, expect)  # prompt ids 7, 8 untouched: output-only penalties


def test_penalty_order_bias_then_repetition_then_presence():
    lg = torch.zeros(V)
    s = sampler(prompt=[1], logit_bias={1: 3.0}, repetition_penalty=1.5,
                presence_penalty=0.5, temperature=1.0)
    s.accept(1)
    assert math.isclose(float(s.process(lg)[1]), 3.0 / 1.5 - 0.5 - 0.0, rel_tol=1e-6)


def test_logit_bias_bans_and_forces():
    lg = rand_logits(6, scale=1.0)
    top = int(lg.argmax())
    ban = sampler(logit_bias={top: -100.0}, seed=0)
    assert top not in draws(ban, lg, 300)
    assert ban.process(lg)[top] == lg[top] - 100.0
    assert sampler(temperature=0.0, logit_bias={top: -100.0}).sample(lg) != top
    forced = sampler(logit_bias={17: 100.0}, seed=0)
    assert set(draws(forced, lg, 300)) == {17}


def test_process_does_not_mutate_input():
    lg = rand_logits(7)
    before = lg.clone()
    s = sampler(prompt=[1, 2], logit_bias={3: 5.0}, repetition_penalty=1.3,
                presence_penalty=1.0, temperature=0.5, top_p=0.9)
    s.accept(1)
    s.process(lg)
    s.sample(lg)
    assert torch.equal(lg, before)


# -- temperature: empirical distribution ------------------------------------------------
@pytest.mark.parametrize("T", [0.5, 2.0])
def test_temperature_empirical_distribution(T):
    lg = torch.tensor([1.0, 0.5, 0.0, -1.0, 2.0])
    s = SequenceSampler(SamplingParams(temperature=T, seed=11), 5, [])
    n = 3000
    counts = torch.bincount(torch.tensor(draws(s, lg, n)), minlength=5).double()
    target = torch.softmax(lg.double() / T, 0)
    # chi-square, 4 degrees of freedom: P(X > 18.47) = 0.001
    assert chi2(counts, target) < 18.47
    # and the test has power: the untempered distribution is rejected
    assert chi2(counts, torch.softmax(lg.double(), 0)) > 100


def test_top_k_draws_follow_renormalised_distribution():
    lg = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -3.0])
    s = SequenceSampler(SamplingParams(top_k=3, seed=5), 6, [])
    counts = torch.bincount(torch.tensor(draws(s, lg, 3000)), minlength=6).double()
    assert counts[3:].sum() == 0
    assert chi2(counts[:3], torch.softmax(lg[:3].double(), 0)) < 13.82  # df 2, p = 0.001


def test_two_level_draw_matches_distribution_and_skips_masked(small_blocks):
    """The draw over a long vector (chunks of 16 here): chunks, incl. the short
    tail chunk, are chosen by mass; -inf tokens never come out."""
    v = 300  # 18 chunks of 16 plus a 12-token tail
    lg = torch.full((v,), float("-inf"))
    ids = torch.tensor([5, 40, 160, 299])
    lg[ids] = torch.tensor([0.0, 1.0, 0.5, 1.5])
    s = SequenceSampler(SamplingParams(seed=3), v, [])
    got = torch.tensor(draws(s, lg, 1500))
    assert set(got.tolist()) <= set(ids.tolist())
    counts = torch.stack([(got == i).sum() for i in ids]).double()
    assert chi2(counts, torch.softmax(lg[ids].double(), 0)) < 16.27  # df 3, p = 0.001

    flat = SequenceSampler(SamplingParams(seed=4), v, [])
    got = torch.tensor(draws(flat, torch.zeros(v), 1500))
    counts = torch.bincount(got // 30, minlength=10).double()
    assert chi2(counts, torch.full((10,), 0.1, dtype=torch.float64)) < 27.88  # df 9


def test_low_temperature_wide_range_and_bad_logits():
    lg = torch.linspace(-60.0, 40.0, 49_152)  # /0.05: exponents far below exp() underflow
    lg[7] = 50.0
    s = sampler(v=49_152, temperature=0.05, seed=0)
    assert draws(s, lg, 3) == [7, 7, 7]
    with pytest.raises(GroundupError, match="NaN"):
        sampler(seed=0).sample(torch.full((V,), float("nan")))
    with pytest.raises(GroundupError, match="-inf"):
        sampler(seed=0).sample(torch.full((V,), float("-inf")))
    with pytest.raises(GroundupError, match="NaN"):  # the histogram top-p path
        sampler(seed=0, top_p=0.9).sample(torch.full((V,), float("nan")))


# -- logprobs -------------------------------------------------------------------------
def test_logprobs_of_raw_post_bias():
    lg = rand_logits(8)
    s = sampler(logit_bias={4: 2.0}, temperature=0.3, repetition_penalty=1.5, prompt=[4])
    biased = lg.clone()
    biased[4] += 2.0
    ref = torch.log_softmax(biased, 0)
    chosen, top = s.logprobs_of(lg, 4, 5)
    assert math.isclose(chosen, float(ref[4]), abs_tol=1e-5)
    assert [t for t, _ in top] == torch.topk(ref, 5).indices.tolist()
    assert all(math.isclose(lp, float(ref[t]), abs_tol=1e-5) for t, lp in top)
    assert s.logprobs_of(lg, 4, 0)[1] == []


# -- batch ----------------------------------------------------------------------------
def test_sample_batch_greedy_fast_path_and_mixed_rows():
    logits = torch.stack([rand_logits(i, scale=0.5) for i in range(4)])
    greedy = [sampler(temperature=0.0) for _ in range(4)]
    assert sample_batch(greedy, logits) == logits.argmax(-1).tolist()

    def mixed() -> list[SequenceSampler]:
        return [sampler(temperature=0.0), sampler(seed=1), sampler(temperature=0.0, prompt=[0],
                repetition_penalty=1.2), sampler(seed=2, top_k=20)]

    a, b = mixed(), mixed()
    got = sample_batch(a, logits)
    assert got == [s.sample(row) for s, row in zip(b, logits)]
    assert got[0] == int(logits[0].argmax())
    with pytest.raises(ValueError):
        sample_batch(a[:2], logits)


# -- validation -----------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("top_k", -1), ("top_k", 2.5),
    ("top_p", 0.0), ("top_p", 1.5), ("min_p", -0.1), ("min_p", 1.1),
    ("repetition_penalty", 0.0), ("presence_penalty", 3.0), ("frequency_penalty", -2.5),
    ("logit_bias", {1: 200.0}), ("logit_bias", {-1: 1.0}), ("seed", "x"), ("max_tokens", 0),
    ("stop", "\n"), ("stop", [""]), ("stop_token_ids", [-3]), ("logprobs", 21), ("logprobs", -1),
])
def test_validate_errors_are_one_line_and_name_the_field(field, value):
    with pytest.raises(GroundupError) as e:
        SamplingParams(**{field: value}).validate()
    msg = str(e.value)
    assert "\n" not in msg and field in msg


def test_valid_params_pass_and_bias_outside_vocab_rejected():
    SamplingParams(temperature=0, top_k=40, top_p=0.9, min_p=0.05, logit_bias={3: -100},
                   seed=1, stop=["\n\n"], stop_token_ids=[2], logprobs=0).validate()
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy
    with pytest.raises(GroundupError, match="logit_bias"):
        sampler(v=10, logit_bias={10: 1.0})
