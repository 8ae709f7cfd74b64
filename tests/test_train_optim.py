"""Pretraining building blocks: Muon, the optimizer split, lr schedules, the depth dial, FLOPs and the matmul peak."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from groundup import card
from groundup.config import ModelConfig
from groundup.errors import GroundupError
from groundup.model import Transformer
from groundup.train import flops as flops_mod
from groundup.train.depth import block_params, depth_settings
from groundup.train.flops import fast_dtype, flops_per_token, matmul_peak, peak_cache_path, peak_key
from groundup.train.muon import Muon, orthogonalize
from groundup.train.optimizers import build_optimizers, clean_name, set_lr
from groundup.train.schedule import lr_multiplier


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- Muon ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(96, 96), (200, 50), (50, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_orthogonalize_puts_singular_values_near_one(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=gen), full_matrices=False)
    g = u @ torch.diag(torch.logspace(1, -1, min(shape))) @ vh  # singular values from 10 down to 0.1
    o = orthogonalize(g, steps=5, dtype=dtype)
    assert o.shape == g.shape and o.dtype == g.dtype
    sv = torch.linalg.svdvals(o)
    # the quintic coefficients trade exactness for speed: ~[0.7, 1.2], not exactly 1
    assert sv.min() > 0.55 and sv.max() < 1.3, sv
    # and it is the orthogonal factor U Vᵀ of g, not just any orthogonal-ish matrix
    cos = (o * (u @ vh)).sum() / (o.norm() * (u @ vh).norm())
    assert cos > 0.95


def test_muon_step_is_scaled_orthogonalized_gradient():
    torch.manual_seed(0)
    tall = torch.nn.Parameter(torch.randn(64, 16))
    wide = torch.nn.Parameter(torch.randn(16, 64))
    before = [tall.detach().clone(), wide.detach().clone()]
    grads = [torch.randn(64, 16), torch.randn(16, 64)]
    tall.grad, wide.grad = grads[0].clone(), grads[1].clone()
    opt = Muon([tall, wide], lr=0.1, momentum=0.0, nesterov=False, ns_dtype=torch.float32)
    opt.step()
    for p, b, g, scale in ((tall, before[0], grads[0], 2.0), (wide, before[1], grads[1], 1.0)):
        step = (b - p.detach()) / 0.1
        assert torch.allclose(step, scale * orthogonalize(g, dtype=torch.float32), atol=1e-5)


def test_muon_momentum_and_weight_decay():
    p = torch.nn.Parameter(torch.ones(8, 8))
    opt = Muon([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5, ns_dtype=torch.float32)
    g = torch.randn(8, 8, generator=torch.Generator().manual_seed(3))
    p.grad = g.clone()
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert torch.allclose(buf, 0.1 * g)  # EMA of gradients starting from zero
    expected = torch.ones(8, 8) * (1 - 0.1 * 0.5) - 0.1 * orthogonalize(g.lerp(buf, 0.9), dtype=torch.float32)
    assert torch.allclose(p.detach(), expected, atol=1e-5)


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.ones(8))])
    opt = Muon([torch.nn.Parameter(torch.ones(4, 4))])
    with pytest.raises(ValueError, match="2-D"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2, 2, 2))]})
    assert len(opt.param_groups) == 1  # the refused group was not half-added


def _affine_batch(step: int, vocab: int = 32, seq: int = 16, rows: int = 16) -> torch.Tensor:
    """Sequences x_{i+1} = x_i + m (mod vocab) with random start and m: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(step)
    start = torch.randint(0, vocab, (rows, 1), generator=g)
    mult = torch.randint(1, 4, (rows, 1), generator=g)
    return (start + mult * torch.arange(seq + 1)) % vocab


def _train_tiny(matrix_opt, steps: int = 15) -> float:
    """Train a depth-2 model (AdamW for embeddings/head/norms in every case) and return held-out loss."""
    s = depth_settings(2, 32, 16)
    model = Transformer(s.config)
    model.init_weights(seed=0)
    adam, muon = build_optimizers(model)
    opts = [adam, matrix_opt(muon.param_groups[0]["params"])]
    for step in range(steps):
        b = _affine_batch(step)
        loss = F.cross_entropy(model(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten())
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad()
    b = _affine_batch(10_000)
    with torch.no_grad():
        return F.cross_entropy(model(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten()).item()


def test_muon_trains_faster_than_sgd():
    """Same model, data and AdamW side; only the optimizer of the block matrices differs, each at its best lr."""
    muon = min(_train_tiny(lambda p, lr=lr: Muon(p, lr=lr)) for lr in (0.02, 0.05, 0.1))
    sgd = min(_train_tiny(lambda p, lr=lr: torch.optim.SGD(p, lr=lr, momentum=0.9)) for lr in (0.3, 1.0, 3.0))
    assert muon < 0.7 * sgd, (muon, sgd)


# -- which parameter goes where ----------------------------------------------------------
def _groups(opts) -> dict[str, tuple[str, list[torch.Tensor], dict]]:
    return {g["name"]: (type(o).__name__, g["params"], g) for o in opts for g in o.param_groups}


def test_param_groups_nanochat_split():
    s = depth_settings(2, 100, 32)
    model = Transformer(s.config)
    opts = build_optimizers(model, weight_decay=0.1)
    groups = _groups(opts)
    ids = {name: {id(p) for p in ps} for name, (_, ps, _) in groups.items()}
    named = dict(model.named_parameters())
    assert ids["embed"] == {id(named["tok_emb.weight"])}
    assert ids["head"] == {id(named["lm_head.weight"])}
    assert ids["matrix"] == {id(p) for n, p in named.items() if n.startswith("layers.") and p.ndim == 2}
    assert ids["scalar"] == {id(p) for p in named.values() if p.ndim == 1}
    assert len(ids["scalar"]) == 2 * 2 + 2 * 2 + 1  # per layer 2 norms + q/k norms, final norm
    assert sum(len(v) for v in ids.values()) == len(named)  # every parameter exactly once
    assert groups["matrix"][0] == "Muon" and {groups[k][0] for k in ("embed", "head", "scalar")} == {"AdamW"}
    s_width = (s.config.dim / 768) ** -0.5
    assert groups["embed"][2]["lr"] == pytest.approx(0.2 * s_width)
    assert groups["head"][2]["lr"] == pytest.approx(0.004 * s_width)
    assert groups["scalar"][2]["lr"] == pytest.approx(0.04 * s_width)
    assert groups["matrix"][2]["lr"] == pytest.approx(0.02)
    assert groups["scalar"][2]["weight_decay"] == 0.0 and groups["matrix"][2]["weight_decay"] == 0.1
    for _, _, g in groups.values():
        assert g["initial_lr"] == g["lr"]
    set_lr(opts, 0.25)
    for _, _, g in _groups(opts).values():
        assert g["lr"] == pytest.approx(0.25 * g["initial_lr"])


def test_param_groups_gpt2_style_and_wrapped():
    cfg = ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=2, mlp_hidden=64, activation="gelu",
                      pos_embedding="learned", norm="layernorm", attn_bias=True, mlp_bias=True,
                      tied_embeddings=True, context_length=16)
    model = Transformer(cfg)

    class Wrapper(torch.nn.Module):  # what DDP looks like from the outside: `.module`
        def __init__(self, m):
            super().__init__()
            self.module = m

    groups = _groups(build_optimizers(Wrapper(model)))
    named = dict(model.named_parameters())
    # tied: the token table is also the output layer, so it trains at the head's lr (at embed_lr a
    # 64-wide tied model diverged); the position table stays an embedding
    assert {id(p) for p in groups["head"][1]} == {id(named["tok_emb.weight"])}
    assert {id(p) for p in groups["embed"][1]} == {id(named["pos_emb.weight"])}
    biases = {id(p) for n, p in named.items() if n.endswith(".bias")}
    assert biases and biases <= {id(p) for p in groups["scalar"][1]}
    assert clean_name("module._orig_mod.layers.0.attn.wq.weight") == "layers.0.attn.wq.weight"


def test_adamw_kind_is_one_optimizer():
    model = Transformer(depth_settings(1, 40, 16).config)
    opts = build_optimizers(model, kind="adamw", matrix_lr=3e-3)
    assert len(opts) == 1 and isinstance(opts[0], torch.optim.AdamW)
    groups = _groups(opts)
    assert set(groups) == {"embed", "head", "scalar", "matrix"}
    assert groups["matrix"][2]["lr"] == pytest.approx(3e-3)
    assert sum(len(g[1]) for g in groups.values()) == len(list(model.parameters()))
    with pytest.raises(GroundupError, match="optimizer kind"):
        build_optimizers(model, kind="sgd")


# -- schedules ------------------------------------------------------------------------------
def test_schedule_shapes():
    total, warm = 100, 10
    for kind in ("cosine", "wsd", "constant"):
        assert lr_multiplier(0, total, warmup=warm, kind=kind) == pytest.approx(0.1)
        assert lr_multiplier(4, total, warmup=warm, kind=kind) == pytest.approx(0.5)
        assert lr_multiplier(warm, total, warmup=warm, kind=kind) == pytest.approx(1.0)
    cos = [lr_multiplier(s, total, warmup=warm, kind="cosine", min_ratio=0.1) for s in range(total + 1)]
    assert cos[55] == pytest.approx(0.55)  # halfway through the decay: (1 + min) / 2
    assert cos[total] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(cos[warm:], cos[warm + 1:]))
    wsd = [lr_multiplier(s, total, warmup=warm, kind="wsd", cooldown=0.2) for s in range(total + 1)]
    assert wsd[warm:81] == [1.0] * (81 - warm)  # stable until the last 20%
    assert wsd[90] == pytest.approx(0.5) and wsd[total] == pytest.approx(0.0)
    assert lr_multiplier(total + 50, total, warmup=warm, kind="wsd") == pytest.approx(0.0)
    assert lr_multiplier(80, total, warmup=0, kind="constant") == 1.0
    assert lr_multiplier(0, 10, warmup=0, kind="cosine") == pytest.approx(1.0)
    with pytest.raises(GroundupError, match="schedule"):
        lr_multiplier(0, 10, warmup=1, kind="linear")


# -- the depth dial ---------------------------------------------------------------------------
def test_depth_settings_monotonic_and_consistent():
    prev = None
    for depth in (1, 2, 3, 4, 6, 8, 12, 20):
        s = depth_settings(depth, 4096, 256)
        cfg = s.config
        assert cfg.n_layers == depth and cfg.dim == depth * 64 and cfg.n_heads * cfg.head_dim == cfg.dim
        assert cfg.mlp_hidden == 4 * cfg.dim and cfg.activation == "relu2" and cfg.qk_norm
        assert not cfg.tied_embeddings and cfg.pos_embedding == "rope" and cfg.context_length == 256
        assert s.batch_tokens % s.seq_len == 0 and s.seq_len == 256
        assert block_params(cfg) == 12 * depth * cfg.dim ** 2
        if prev is not None:
            assert cfg.dim > prev.config.dim and s.batch_tokens >= prev.batch_tokens
            assert card.count_params(cfg) > card.count_params(prev.config)
        prev = s
    assert depth_settings(20, 4096, 2048).batch_tokens == 524_288  # the nanochat anchor
    odd = depth_settings(3, 100, 300, aspect=50, head_dim=32)
    assert odd.config.dim == 160 and odd.config.n_heads == 5 and odd.batch_tokens % 300 == 0
    model = Transformer(odd.config)  # the config builds, and the card counts what it builds
    assert model.num_params() == card.count_params(odd.config)
    with pytest.raises(GroundupError, match="depth"):
        depth_settings(0, 100, 64)


# -- FLOPs ------------------------------------------------------------------------------------
def test_flops_per_token_hand_count_and_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode

    cfg = ModelConfig(vocab_size=10, dim=8, n_layers=2, n_heads=2, head_dim=4, mlp_hidden=16, activation="relu2",
                      tied_embeddings=False, context_length=16)
    T, B = 5, 3
    # by hand: per layer q,k,v,o 4·8·8 + MLP up/down 2·8·16 = 512; 2 layers + head 10·8 -> N = 1104
    n = 2 * (4 * 8 * 8 + 2 * 8 * 16) + 10 * 8
    attention = 12 * 2 * 2 * 4 * T  # 12 · layers · heads · head_dim · T
    assert flops_per_token(cfg, T) == 6 * n + attention
    # torch's own count of the matmuls in a forward + backward pass agrees with the 6N part
    model = Transformer(cfg)
    model.init_weights(seed=0)
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 10, (B, T))).sum().backward()
    per_op = counter.get_flop_counts()["Global"]
    matmul = sum(v for op, v in per_op.items() if "attention" not in str(op))
    assert matmul == 6 * n * B * T
    sliding = ModelConfig(vocab_size=10, dim=8, n_layers=2, n_heads=2, head_dim=4, mlp_hidden=16,
                          activation="relu2", tied_embeddings=False, sliding_window=3, sliding_window_pattern=2)
    assert flops_per_token(sliding, T) == 6 * n + 12 * 2 * 4 * (3 + T)  # layer 0 local (window 3), layer 1 global


def test_matmul_peak_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path))
    monkeypatch.setattr(flops_mod, "machine_overloaded", lambda: False)  # cache even on a busy test machine
    assert peak_cache_path() == tmp_path / "peak.json"
    peak = matmul_peak(torch.float32, "cpu")  # a real measurement
    assert 1e8 < peak < 1e15
    data = json.loads((tmp_path / "peak.json").read_text())
    key = peak_key(torch.float32, "cpu")
    assert data[key]["flops"] == pytest.approx(peak) and "threads=1" in key and key.endswith("float32")

    def must_not_measure(*a, **k):
        raise AssertionError("measured again instead of reading peak.json")

    monkeypatch.setattr(flops_mod, "measure_matmul_peak", must_not_measure)
    assert matmul_peak(torch.float32, "cpu") == pytest.approx(peak)
    monkeypatch.setattr(flops_mod, "measure_matmul_peak", lambda dtype, device="cpu": (123.0, 256))
    assert matmul_peak(torch.float32, "cpu", refresh=True) == 123.0
    assert json.loads((tmp_path / "peak.json").read_text())[key]["flops"] == 123.0


def test_matmul_peak_not_cached_when_overloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path))
    monkeypatch.setattr(flops_mod.os, "getloadavg", lambda: (4.0 * (flops_mod.os.cpu_count() or 1), 0.0, 0.0))
    assert flops_mod.machine_overloaded()
    assert matmul_peak(torch.float32, "cpu") > 0  # measured and used ...
    assert not (tmp_path / "peak.json").exists()  # ... but not kept
    monkeypatch.setattr(flops_mod.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not flops_mod.machine_overloaded()


def test_fast_dtype_follows_measured_peaks(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path))
    monkeypatch.setattr(flops_mod, "machine_overloaded", lambda: False)
    chosen = fast_dtype("cpu")  # real measurements of both dtypes on this CPU
    data = json.loads((tmp_path / "peak.json").read_text())
    bf16 = data[peak_key(torch.bfloat16, "cpu")]["flops"]
    fp32 = data[peak_key(torch.float32, "cpu")]["flops"]
    assert chosen == (torch.bfloat16 if bf16 >= 1.3 * fp32 else torch.float32)
    for bf16_flops, expected in ((2.0 * fp32, torch.bfloat16), (1.1 * fp32, torch.float32)):
        data[peak_key(torch.bfloat16, "cpu")]["flops"] = bf16_flops
        (tmp_path / "peak.json").write_text(json.dumps(data))
        assert fast_dtype("cpu") == expected
