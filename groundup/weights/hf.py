"""Hugging Face model directories: config.json + *.safetensors + tokenizer.json, read and written.

Maps Hugging Face parameter names (Llama/Mistral/Qwen2/Granite, Mixtral MoE,
Gemma 3, GPT-2) onto groundup's names. Gemma stores RMSNorm weights as
offsets from 1 (`x * (1 + w)`); they are shifted on load and back on save.
GPT-2's Conv1D weights are transposed. `save_hf` writes a Llama- or
Gemma-3-style directory that transformers (and this loader) can read.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

import torch

from groundup.config import ModelConfig
from groundup.errors import GroundupError

_LLAMA = {
    "self_attn.q_proj": "attn.wq", "self_attn.k_proj": "attn.wk", "self_attn.v_proj": "attn.wv",
    "self_attn.o_proj": "attn.wo", "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
    "mlp.gate_proj": "mlp.w_gate", "mlp.up_proj": "mlp.w_up", "mlp.down_proj": "mlp.w_down",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
    "block_sparse_moe.gate": "mlp.router",
}
_GEMMA_NORMS = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "post_attn_norm",
    "pre_feedforward_layernorm": "mlp_norm", "post_feedforward_layernorm": "post_mlp_norm",
}
_GPT2 = {"ln_1": "attn_norm", "attn.c_proj": "attn.wo", "ln_2": "mlp_norm", "mlp.c_fc": "mlp.w_up",
         "mlp.c_proj": "mlp.w_down"}
_EXPERT = re.compile(r"^block_sparse_moe\.experts\.(\d+)\.(w[123])$")
_EXPERT_MAP = {"w1": "w_gate", "w3": "w_up", "w2": "w_down"}


def _safetensor_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise GroundupError(f"{path}: no *.safetensors files (a Hugging Face model directory needs config.json, "
                            "safetensors weights and tokenizer.json)")
    return files


def hf_to_groundup(name: str, cfg: ModelConfig) -> str | None:
    name = re.sub(r"^(model\.language_model\.|language_model\.model\.|model\.|transformer\.)", "", name)
    if name in ("embed_tokens.weight", "wte.weight"):
        return "tok_emb.weight"
    if name == "wpe.weight":
        return "pos_emb.weight"
    if name in ("norm.weight", "ln_f.weight", "ln_f.bias"):
        return "norm." + name.rsplit(".", 1)[1]
    if name == "lm_head.weight":
        return None if cfg.tied_embeddings else "lm_head.weight"
    m = re.match(r"^(?:layers|h)\.(\d+)\.(.+)\.(weight|bias)$", name)
    if not m:
        return None
    layer, mod, kind = m.groups()
    if cfg.arch == "gpt2":
        tail = _GPT2.get(mod)
    elif cfg.arch == "gemma3" and mod in _GEMMA_NORMS:
        tail = _GEMMA_NORMS[mod]
    else:
        tail = _LLAMA.get(mod)
        e = _EXPERT.match(mod)
        if e:
            tail = f"mlp.experts.{e.group(1)}.{_EXPERT_MAP[e.group(2)]}"
    return f"layers.{layer}.{tail}.{kind}" if tail else None


def iter_hf_state(path: Path, cfg: ModelConfig, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    offset = float(cfg.extra.get("hf_norm_offset", 0.0))
    for f in _safetensor_files(path):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                t = st.get_tensor(name)
                if cfg.arch == "gpt2" and name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
                    layer = re.search(r"h\.(\d+)\.", name).group(1)
                    kind = name.rsplit(".", 1)[1]
                    t = t.t() if kind == "weight" else t
                    for part, piece in zip(("wq", "wk", "wv"), t.split(cfg.dim, dim=0)):
                        yield f"layers.{layer}.attn.{part}.{kind}", piece.contiguous().to(dtype)
                    continue
                if cfg.arch == "gpt2" and name.endswith(("attn.masked_bias", "attn.bias")):  # causal-mask buffers
                    continue
                g = hf_to_groundup(name, cfg)
                if g is None:
                    if name.endswith("lm_head.weight") or "rotary_emb" in name:
                        continue
                    raise GroundupError(f"{f}: tensor {name!r} is not part of a {cfg.arch} model groundup knows")
                if cfg.arch == "gpt2" and t.ndim == 2 and g.startswith("layers.") and "norm" not in g:
                    t = t.t().contiguous()  # Conv1D stores [in, out]
                if "norm" in g:
                    yield g, t.float() + offset
                else:
                    yield g, t.to(dtype)


def load_hf(path: Path, dtype: torch.dtype, device: torch.device):
    from groundup.models import build_from_state
    from groundup.tokenizer.tokenizer import Tokenizer

    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise GroundupError(f"{path}: not a model directory (no config.json); give a GGUF file, "
                            "a Hugging Face directory or a groundup checkpoint")
    try:
        cfg = ModelConfig.from_hf(json.loads(cfg_path.read_text()))
    except (KeyError, ValueError) as e:
        raise GroundupError(f"{cfg_path}: cannot read the model config ({e})") from None
    model = build_from_state(cfg, iter_hf_state(path, cfg, dtype), device, str(path))
    return model, Tokenizer.from_hf_dir(path)


def save_hf(model, tokenizer, out: str | Path) -> Path:
    """Write a Llama- or Gemma-3-style HF directory (atomic: written beside, then renamed)."""
    from safetensors.torch import save_file

    cfg: ModelConfig = model.cfg
    if cfg.arch not in ("llama", "gemma3", "groundup") or cfg.n_experts or cfg.pos_embedding != "rope":
        raise GroundupError(f"HF export supports Llama- and Gemma-3-style dense RoPE models, not {cfg.arch}")
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gemma = cfg.arch == "gemma3"
    inv = {v: k for k, v in (_GEMMA_NORMS if gemma else {}).items()}
    inv.update({v: k for k, v in _LLAMA.items() if not (gemma and v in inv)})
    tensors = {}
    for name, p in model.state_dict().items():
        if name == "tok_emb.weight":
            key = "model.embed_tokens.weight"
        elif name.startswith("norm."):
            key = "model.norm.weight"
        elif name == "lm_head.weight":
            key = "lm_head.weight"
        else:
            m = re.match(r"^layers\.(\d+)\.(.+)\.(weight|bias)$", name)
            key = f"model.layers.{m.group(1)}.{inv[m.group(2)]}.{m.group(3)}"
        t = p.detach().cpu()
        if "norm" in name and gemma:
            t = t.float() - 1.0
        tensors[key] = t.contiguous()
    save_file(tensors, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, next(iter(tensors.values())).dtype), indent=2))
    tokenizer.save(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def hf_config(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    d = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "intermediate_size": cfg.mlp_hidden, "max_position_embeddings": cfg.context_length,
        "rope_theta": cfg.rope_base, "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tied_embeddings,
        "torch_dtype": str(dtype).replace("torch.", ""), "rope_scaling": cfg.rope_scaling,
    }
    if cfg.arch == "gemma3":
        d.update(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], hidden_activation="gelu_pytorch_tanh",
                 sliding_window=cfg.sliding_window, sliding_window_pattern=cfg.sliding_window_pattern,
                 rope_local_base_freq=cfg.rope_local_base, query_pre_attn_scalar=round(cfg.query_scale ** -2),
                 final_logit_softcapping=cfg.logit_softcap)
    else:
        d.update(model_type="llama", architectures=["LlamaForCausalLM"],
                 hidden_act="silu" if cfg.activation == "swiglu" else "gelu_pytorch_tanh")
    return d
