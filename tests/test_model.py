"""The one Transformer: every ModelConfig option builds, trains a step, counts its parameters
the way card.py does, and survives checkpoint and Hugging Face round trips."""
from __future__ import annotations

import json

import pytest
import torch

from groundup.card import count_params
from groundup.config import ModelConfig
from groundup.engine.kvcache import KVCache
from groundup.errors import GroundupError
from groundup.model import Transformer
from groundup.models import load_model

VARIANTS = {
    "llama": dict(),
    "gpt2": dict(activation="gelu", pos_embedding="learned", norm="layernorm", attn_bias=True, mlp_bias=True),
    "gemma3": dict(activation="geglu", qk_norm=True, sandwich_norm=True, embed_scale=True, sliding_window=8,
                   sliding_window_pattern=3, rope_local_base=10000.0, rope_base=1e6, logit_softcap=30.0),
    "moe": dict(n_experts=4, n_experts_per_token=2),
    "relu2_mqa_untied": dict(activation="relu2", n_kv_heads=1, tied_embeddings=False),
    "llama3_rope": dict(rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
}


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=97, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden=64, context_length=64)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_builds_trains_and_counts(name):
    cfg = tiny(**VARIANTS[name])
    model = Transformer(cfg)
    model.init_weights(seed=0)
    assert model.num_params() == count_params(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    logits = model(tokens)
    assert logits.shape == (2, 20, cfg.vocab_size) and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), tokens[:, 1:].reshape(-1))
    loss.backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.step()
    assert torch.nn.functional.cross_entropy(model(tokens)[:, :-1].reshape(-1, cfg.vocab_size),
                                             tokens[:, 1:].reshape(-1)) < loss


@pytest.mark.parametrize("name", list(VARIANTS))
def test_incremental_decode_matches_full_forward(name):
    """Prefill + token-by-token decode through the KV cache gives the full forward's logits."""
    cfg = tiny(**VARIANTS[name])
    torch.manual_seed(0)
    model = Transformer(cfg)
    model.init_weights(seed=1)
    model.eval()
    T = 30  # longer than the Gemma variant's window of 8
    tokens = torch.randint(0, cfg.vocab_size, (1, T))
    with torch.no_grad():
        full = model(tokens)[0]
        cache = KVCache(cfg, n_slots=2, max_len=48, dtype=torch.float32)
        steps = [model(tokens[:, :12], torch.tensor([0]), cache, slice(1, 2))[0]]
        steps += [model(tokens[:, i:i + 1], torch.tensor([i]), cache, slice(1, 2))[0] for i in range(12, T)]
    torch.testing.assert_close(torch.cat(steps), full, atol=2e-4, rtol=2e-4)


def test_batched_decode_with_different_positions_matches_single():
    cfg = tiny(**VARIANTS["gemma3"])
    model = Transformer(cfg)
    model.init_weights(seed=2)
    model.eval()
    a = torch.randint(0, cfg.vocab_size, (1, 14))
    b = torch.randint(0, cfg.vocab_size, (1, 5))
    with torch.no_grad():
        cache = KVCache(cfg, 2, 40, torch.float32)
        model(a, torch.tensor([0]), cache, slice(0, 1))
        model(b, torch.tensor([0]), cache, slice(1, 2))
        nxt = torch.tensor([[3], [7]])
        batched = model(nxt, torch.tensor([14, 5]), cache, slice(0, 2))[:, -1]
        single_a = model(torch.cat([a, nxt[:1]], 1))[0, -1]
        single_b = model(torch.cat([b, nxt[1:]], 1))[0, -1]
    torch.testing.assert_close(batched[0], single_a, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(batched[1], single_b, atol=2e-4, rtol=2e-4)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="activation"):
        tiny(activation="tanh")
    with pytest.raises(ValueError, match="multiple"):
        tiny(n_heads=4, n_kv_heads=3)


def test_config_json_round_trip(tmp_path):
    cfg = tiny(**VARIANTS["gemma3"])
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg


def test_loaded_parameter_count_equals_card(smollm2_path, gemma3_path):
    for path in (smollm2_path, gemma3_path):
        model, _ = load_model(path, dtype="fp32")
        from groundup.weights.gguf import GGUFFile

        assert model.num_params() == count_params(GGUFFile(path, long_arrays=False).config())
        assert model.num_params() in (134_515_008, 268_098_176)


def test_checkpoint_and_hf_round_trips_keep_logits(tmp_path, smollm2_path):
    from groundup.weights.checkpoint import save_checkpoint
    from groundup.weights.hf import save_hf

    model, tok = load_model(smollm2_path, dtype="fp32")
    ids = torch.tensor([tok.encode("The capital of France is")])
    with torch.no_grad():
        ref = model(ids)
    save_checkpoint(tmp_path / "ckpt", model, tok, {"step": 0})
    save_hf(model, tok, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
    for d in ("ckpt", "hf"):
        m2, tok2 = load_model(tmp_path / d, dtype="fp32")
        assert tok2.encode("The capital of France is") == ids[0].tolist()
        with torch.no_grad():
            torch.testing.assert_close(m2(ids), ref)


def test_corrupted_and_truncated_gguf_give_one_line_errors(tmp_path, smollm2_path):
    data = smollm2_path.read_bytes()
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(data[: len(data) // 2])
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + data[4:4096])
    for path, needle in ((trunc, "truncated"), (bad, "not a GGUF file")):
        with pytest.raises(GroundupError) as ei:
            load_model(path)
        msg = str(ei.value)
        assert needle in msg and str(path) in msg and "\n" not in msg
