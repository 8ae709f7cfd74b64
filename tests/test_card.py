"""Model-card arithmetic: exact parameter counts (Granite 8B, SmolLM2, Gemma 3, GPT-2, Mixtral),
GGUF tensor sums, memory, KV cache, FLOPs, the card table and the `groundup card` command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from groundup import card
from groundup.card import (active_params, count_params, flops_per_token, kv_bytes, kv_bytes_per_token,
                           read_gguf_header, weight_bytes)
from groundup.cli import main
from groundup.config import ModelConfig
from groundup.errors import GroundupError

# ibm-granite/granite-3.1-8b-instruct, the seed's model-card example (the fields the count depends on)
GRANITE = {
    "architectures": ["GraniteForCausalLM"], "model_type": "granite", "hidden_size": 4096,
    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 12800,
    "hidden_act": "silu", "vocab_size": 49155, "tie_word_embeddings": True, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
}
GEMMA3_270M = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 18,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048,
    "hidden_activation": "gelu_pytorch_tanh", "vocab_size": 262144, "max_position_embeddings": 32768,
    "sliding_window": 512, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-6,
}
GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024}
MIXTRAL = {
    "model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000, "tie_word_embeddings": False,
    "max_position_embeddings": 32768, "num_local_experts": 8, "num_experts_per_tok": 2, "hidden_act": "silu",
}


def granite() -> ModelConfig:
    return ModelConfig.from_hf(GRANITE)


# -- exact parameter counts -------------------------------------------------------
def test_granite_8b_count_is_exact():
    cfg = granite()
    assert count_params(cfg) == 8_170_848_256
    assert active_params(cfg) == 8_170_848_256  # dense


def test_smollm2_count_from_gguf(smollm2_path):
    h = read_gguf_header(smollm2_path)
    cfg = ModelConfig.from_gguf(h.meta, h.shapes)
    assert count_params(cfg) == 134_515_008


@pytest.mark.parametrize("fixture", ["smollm2_path", "gemma3_path"])
def test_count_equals_sum_of_gguf_tensor_sizes(fixture, request):
    h = read_gguf_header(request.getfixturevalue(fixture))
    cfg = ModelConfig.from_gguf(h.meta, h.shapes)
    assert count_params(cfg) == sum(math.prod(s) for s in h.shapes.values())
    if fixture == "gemma3_path":
        assert "output.weight" not in h.shapes and cfg.tied_embeddings
        assert count_params(cfg) == 268_098_176


def _reader_view(path):
    """Shapes, stored bytes and metadata via the gguf package's own GGUFReader (independent of card.py)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape)) for t in r.tensors}
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return shapes, sum(int(t.n_bytes) for t in r.tensors), meta


def _check_against_reader(path):
    shapes, stored, meta = _reader_view(path)
    h = read_gguf_header(path)
    assert h.shapes == shapes and h.stored_bytes == stored
    for k, v in meta.items():
        if isinstance(h.meta[k], card.ArrayStub):
            assert len(h.meta[k]) == len(v), k
        else:
            assert h.meta[k] == v, k
    cfg = ModelConfig.from_gguf(meta, shapes)
    assert count_params(cfg) == sum(math.prod(s) for s in shapes.values())


def test_header_reader_matches_gguf_reader_smollm2(smollm2_path):
    _check_against_reader(smollm2_path)  # GGUFReader takes ~8 s on this file


@pytest.mark.slow
def test_header_reader_matches_gguf_reader_gemma3(gemma3_path):
    _check_against_reader(gemma3_path)  # GGUFReader takes ~30 s on a 262k-token vocabulary


def test_gemma3_hf_config_matches_gguf_count():
    cfg = ModelConfig.from_hf(GEMMA3_270M)
    assert cfg.tied_embeddings and cfg.qk_norm and cfg.sandwich_norm
    assert count_params(cfg) == 268_098_176


def test_gpt2_count():
    cfg = ModelConfig.from_hf(GPT2)
    assert count_params(cfg) == 124_439_808  # learned positions, LayerNorm weight+bias, all biases


def test_moe_counts_mixtral():
    cfg = ModelConfig.from_hf(MIXTRAL)
    assert count_params(cfg) == 46_702_792_704
    assert active_params(cfg) == 12_879_925_248  # router + top-2 of 8 experts
    b, a = card.param_breakdown(cfg), card.param_breakdown(cfg, active=True)
    assert b["router"] == a["router"] == 32 * 4096 * 8 and a["mlp"] * 4 == b["mlp"]


def test_count_follows_every_field():
    base = ModelConfig(vocab_size=100, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=96,
                       activation="relu2", context_length=32, tied_embeddings=True)
    n = count_params(base)
    hd = 16
    assert n == 100 * 64 + 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 2 * 64 * 96 + 2 * 64) + 64
    d = dict(base.to_dict())
    assert count_params(ModelConfig(**{**d, "tied_embeddings": False})) == n + 100 * 64
    assert count_params(ModelConfig(**{**d, "activation": "swiglu"})) == n + 2 * 64 * 96
    assert count_params(ModelConfig(**{**d, "qk_norm": True})) == n + 2 * 2 * hd
    assert count_params(ModelConfig(**{**d, "sandwich_norm": True})) == n + 2 * 2 * 64
    assert count_params(ModelConfig(**{**d, "norm": "layernorm"})) == n + (2 * 2 + 1) * 64
    assert count_params(ModelConfig(**{**d, "pos_embedding": "learned"})) == n + 32 * 64
    assert count_params(ModelConfig(**{**d, "attn_bias": True})) == n + 2 * (64 + 2 * 32 + 64)
    assert count_params(ModelConfig(**{**d, "mlp_bias": True})) == n + 2 * (96 + 64)
    assert count_params(ModelConfig(**{**d, "head_dim": 32})) == n + 2 * (64 * 128 + 2 * 64 * 64 + 128 * 64) \
        - 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64)
    moe = ModelConfig(**{**d, "n_experts": 4, "n_experts_per_token": 1})
    assert count_params(moe) == n + 2 * (3 * 2 * 64 * 96 + 64 * 4)
    assert active_params(moe) == n + 2 * 64 * 4


# -- memory, KV cache, FLOPs --------------------------------------------------------
def test_block_formats_match_gguf_constants():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

    for fmt, qt in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1), ("q4_k", Q.Q4_K), ("q5_k", Q.Q5_K),
                    ("q6_k", Q.Q6_K)]:
        block, size = GGML_QUANT_SIZES[qt]
        assert card.FORMATS[fmt] == (size, block)


def test_weight_bytes():
    cfg = granite()
    n = 8_170_848_256
    assert weight_bytes(cfg, "fp32") == 4 * n
    assert weight_bytes(cfg, "bf16") == weight_bytes(cfg, "fp16") == 2 * n
    vectors = 40 * 2 * 4096 + 4096  # norms stay fp32 when quantized
    assert weight_bytes(cfg, "int8") == (n - vectors) + 4 * vectors
    assert weight_bytes(cfg, "q8_0") == (n - vectors) // 32 * 34 + 4 * vectors
    assert weight_bytes(cfg, "Q4_K") == math.ceil((n - vectors) / 256) * 144 + 4 * vectors
    with pytest.raises(GroundupError, match="unknown weight format"):
        weight_bytes(cfg, "q3_x")


def test_kv_bytes_dense_and_sliding():
    cfg = granite()
    assert kv_bytes_per_token(cfg) == 2 * 40 * 8 * 128 * 2 == 163_840
    assert kv_bytes(cfg, 131072) == 131072 * 163_840
    assert kv_bytes_per_token(cfg, dtype_bytes=4) == 2 * 163_840
    g = ModelConfig.from_hf(GEMMA3_270M)  # 18 layers, every 6th global, window 512
    per_layer = 2 * 1 * 256 * 2
    assert kv_bytes_per_token(g) == 18 * per_layer
    assert kv_bytes(g, 100) == 100 * 18 * per_layer
    assert kv_bytes(g, 32768) == per_layer * (3 * 32768 + 15 * 512)


def test_flops_per_token():
    cfg = granite()
    matmul = 40 * (4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 12800) + 49155 * 4096
    assert card.matmul_params(cfg) == matmul  # the tied output projection still multiplies
    assert flops_per_token(cfg, 0) == 2 * matmul
    assert flops_per_token(cfg, 1000) == 2 * matmul + 2 * 2 * 40 * 1000 * 128 * 32
    g = ModelConfig.from_hf(GEMMA3_270M)
    assert flops_per_token(g, 4096) - flops_per_token(g, 0) == 4 * 4 * 256 * (3 * 4096 + 15 * 512)
    moe = ModelConfig.from_hf(MIXTRAL)
    assert card.matmul_params(moe) == active_params(moe) - 32000 * 4096 - 32 * 2 * 4096 - 4096  # untied lm_head in both


# -- the card -----------------------------------------------------------------
SEED_ROWS = ["Embedding Size", "# layers", "# attention heads", "Attention head size", "# KV heads",
             "MLP hidden size", "MLP activation", "# experts", "MoE TopK", "Initialization std", "Sequence length",
             "Position embedding", "# Parameters", "# Active parameters", "# Training tokens"]


def test_card_rows_granite_like_the_seed():
    rows = card.card_rows(granite())
    assert [m for m, _, _ in rows[:len(SEED_ROWS)]] == SEED_ROWS
    v = {m: val for m, val, _ in rows}
    assert (v["Embedding Size"], v["# layers"], v["# attention heads"], v["Attention head size"]) == \
        ("4096", "40", "32", "128")
    assert (v["# KV heads"], v["MLP hidden size"], v["MLP activation"]) == ("8", "12800", "SwiGLU")
    assert (v["# experts"], v["MoE TopK"], v["Sequence length"], v["Position embedding"]) == ("-", "-", "128k", "RoPE")
    assert v["# Parameters"] == v["# Active parameters"] == "8.17B"
    assert v["Weights bf16 / fp16"] == "15.2 GiB" and v["KV cache / token"] == "160.0 KiB"
    assert v["KV cache at full context"] == "20.0 GiB"
    assert "8,170,848,256" in dict((m, e) for m, _, e in rows)["# Parameters"]
    for m, val, e in rows:
        assert m and val and e


def test_human_formatting():
    assert card.human_count(8_170_848_256) == "8.17B"
    assert card.human_count(134_515_008) == "134.5M"
    assert card.human_context(131072) == "128k" and card.human_context(8192) == "8k"
    assert card.human_context(1000) == "1k" and card.human_context(1500) == "1500"
    assert card.human_bytes(163_840) == "160.0 KiB" and card.human_bytes(12) == "12 B"
    assert card.human_flops(16.34e9) == "16.34 GFLOP"


def test_card_of_hf_config_and_directory(tmp_path, capsys):
    d = tmp_path / "granite-3.1-8b-instruct"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(GRANITE))
    for target in (d / "config.json", d):
        assert main(["card", str(target), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["params"] == out["active_params"] == 8_170_848_256
        assert out["rows"][0] == {"metric": "Embedding Size", "value": "4096",
                                  "explanation": "embedding vector dimension for input tokens"}
    assert main(["card", str(d)]) == 0
    out = capsys.readouterr().out
    assert "8.17B" in out and "SwiGLU" in out and "128k" in out


def test_card_of_groundup_config(tmp_path, capsys):
    cfg = ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, mlp_hidden=128, name="tiny")
    cfg.save(tmp_path / "config.json")
    card.print_card(str(tmp_path / "config.json"), as_json=True)
    assert json.loads(capsys.readouterr().out)["params"] == count_params(cfg)


def test_card_of_registry_name(smollm2_path, capsys):
    assert main(["card", "smollm2-135m-instruct"]) == 0
    out = capsys.readouterr().out
    assert "134.5M" in out and "SwiGLU" in out and "Weights as stored" in out
    card.print_card(str(smollm2_path), as_json=True)
    d = json.loads(capsys.readouterr().out)
    assert d["params"] == 134_515_008
    assert d["stored_bytes"] < smollm2_path.stat().st_size < d["stored_bytes"] + 8 << 20


def test_card_of_gemma3(gemma3_path, capsys):
    card.print_card("gemma3", as_json=True)
    d = json.loads(capsys.readouterr().out)
    v = {r["metric"]: r["value"] for r in d["rows"]}
    assert d["params"] == 268_098_176 and v["Sliding window"] == "512" and v["MLP activation"] == "GeGLU"
    assert v["Attention head size"] == "256" and v["# KV heads"] == "1" and v["Sequence length"] == "32k"


def test_bad_targets_are_one_line_errors(tmp_path, capsys, smollm2_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_path.read_bytes()[:5000])
    with pytest.raises(GroundupError) as ei:
        read_gguf_header(truncated)
    assert "truncated or corrupted GGUF header" in str(ei.value) and str(truncated) in str(ei.value)
    for target in (str(truncated), "no-such-model", str(tmp_path)):
        assert main(["card", target]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_type": "llama"}')
    with pytest.raises(GroundupError, match="not a usable model config"):
        card.print_card(str(bad))


def test_header_reader_keeps_short_arrays(smollm2_path):
    h = read_gguf_header(smollm2_path)
    assert h.meta["general.architecture"] == "llama" and h.meta["llama.block_count"] == 30
    assert isinstance(h.meta["tokenizer.ggml.tokens"], card.ArrayStub) and len(h.meta["tokenizer.ggml.tokens"]) == 49152
    assert h.shapes["token_embd.weight"] == (49152, 576)  # PyTorch order
    assert h.types["blk.0.attn_q.weight"] == "Q4_1" and np.isclose(h.meta["llama.rope.freq_base"], 100000.0)
