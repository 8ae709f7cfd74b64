"""ModelConfig: the rows of a model card as one dataclass.

Every architecture groundup runs (Llama/SmolLM2, GPT-2, Gemma 3, its own
models) is described by these fields; `model.py` builds the network from it
and `card.py` computes parameter counts, memory and FLOPs from it.
`from_gguf` reads GGUF metadata, `from_hf` a Hugging Face config.json.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATIONS = ("swiglu", "geglu", "gelu", "relu2")
NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned")


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; one field per model-card row."""

    vocab_size: int = 32000
    dim: int = 512  # embedding size
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int | None = None  # None = n_heads (MHA); 1 = MQA; else GQA
    head_dim: int | None = None  # None = dim // n_heads
    mlp_hidden: int = 1536
    activation: str = "swiglu"  # swiglu | geglu | gelu | relu2
    n_experts: int = 0  # 0 = dense MLP
    n_experts_per_token: int = 0  # MoE top-k
    context_length: int = 2048
    pos_embedding: str = "rope"  # rope | learned
    rope_base: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"type": "linear"|"llama3", "factor": ...}
    rope_local_base: float | None = None  # RoPE base on sliding-window layers (Gemma 3)
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    norm_eps: float = 1e-5
    tied_embeddings: bool = True
    qk_norm: bool = False
    logit_softcap: float | None = None
    sliding_window: int | None = None  # window size on local layers
    sliding_window_pattern: int = 0  # every Nth layer is global; 0 = all global
    # architecture details that are not card rows but change the math
    embed_scale: bool = False  # multiply embeddings by sqrt(dim) (Gemma)
    sandwich_norm: bool = False  # extra post-attention / post-MLP norms (Gemma 2/3)
    attn_bias: bool = False  # biases on q/k/v/o projections (GPT-2)
    mlp_bias: bool = False  # biases on MLP projections (GPT-2)
    query_scale: float | None = None  # None = 1/sqrt(head_dim)
    init_std: float = 0.02
    arch: str = "llama"  # llama | gpt2 | gemma3 | groundup (informational)
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            self.head_dim = self.dim // self.n_heads
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown MLP activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; use one of {', '.join(NORMS)}")
        if self.pos_embedding not in POSITIONS:
            raise ValueError(f"unknown position embedding {self.pos_embedding!r}; use one of {', '.join(POSITIONS)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.n_experts and not 0 < self.n_experts_per_token <= self.n_experts:
            raise ValueError("n_experts_per_token must be between 1 and n_experts for an MoE model")

    # -- derived ---------------------------------------------------------
    @property
    def gated(self) -> bool:
        """True for gated MLPs (SwiGLU, GeGLU): three matrices instead of two."""
        return self.activation in ("swiglu", "geglu")

    def is_sliding(self, layer: int) -> bool:
        """Whether `layer` uses sliding-window (local) attention."""
        if not self.sliding_window:
            return False
        if self.sliding_window_pattern <= 0:
            return True
        return (layer + 1) % self.sliding_window_pattern != 0

    def rope_base_for(self, layer: int) -> float:
        if self.is_sliding(layer) and self.rope_local_base:
            return self.rope_local_base
        return self.rope_base

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        """Read a groundup config.json, or a Hugging Face one (detected by `model_type`)."""
        d = json.loads(Path(path).read_text())
        if "model_type" in d or "architectures" in d:
            return cls.from_hf(d)
        return cls.from_dict(d)

    # -- GGUF ------------------------------------------------------------
    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]] | None = None) -> "ModelConfig":
        """Build from GGUF key/value metadata (`general.architecture`, `<arch>.*`)."""
        arch = meta["general.architecture"]

        def g(key: str, default: Any = None) -> Any:
            return meta.get(f"{arch}.{key}", default)

        n_heads = int(g("attention.head_count"))
        n_kv = g("attention.head_count_kv", n_heads)
        if isinstance(n_kv, list):  # per-layer lists exist in some files
            n_kv = n_kv[0]
        dim = int(g("embedding_length"))
        head_dim = int(g("attention.key_length", 0) or dim // n_heads)
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = int(g("vocab_size", 0) or (len(tokens) if tokens is not None else 0))
        if tensor_shapes and "token_embd.weight" in tensor_shapes:
            vocab = int(tensor_shapes["token_embd.weight"][0])
        common = dict(
            vocab_size=vocab,
            dim=dim,
            n_layers=int(g("block_count")),
            n_heads=n_heads,
            n_kv_heads=int(n_kv),
            head_dim=head_dim,
            mlp_hidden=int(g("feed_forward_length")),
            context_length=int(g("context_length", 2048)),
            n_experts=int(g("expert_count", 0) or 0),
            n_experts_per_token=int(g("expert_used_count", 0) or 0),
            name=str(meta.get("general.name", "")),
            arch=arch,
        )
        tied = tensor_shapes is not None and "output.weight" not in tensor_shapes
        scaling = None
        if g("rope.scaling.type") in ("linear", "yarn") and g("rope.scaling.factor"):
            scaling = {"type": g("rope.scaling.type"), "factor": float(g("rope.scaling.factor"))}
        if arch in ("llama", "mistral", "qwen2", "granite"):
            return cls(
                **common,
                activation="swiglu",
                rope_base=float(g("rope.freq_base", 10000.0)),
                rope_scaling=scaling,
                norm="rmsnorm",
                norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
                tied_embeddings=tied,
                attn_bias=arch == "qwen2",
            )
        if arch == "gemma3":
            return cls(
                **common,
                activation="geglu",
                rope_base=float(g("rope.freq_base", 1_000_000.0)),
                rope_local_base=10000.0,
                rope_scaling=scaling,
                norm="rmsnorm",
                norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
                tied_embeddings=tied,
                qk_norm=True,
                sliding_window=int(g("attention.sliding_window", 512)),
                sliding_window_pattern=6,
                embed_scale=True,
                sandwich_norm=True,
                logit_softcap=g("final_logit_softcapping"),
                query_scale=1.0 / math.sqrt(head_dim),
            )
        if arch == "gpt2":
            return cls(
                **common,
                activation="gelu",
                pos_embedding="learned",
                norm="layernorm",
                norm_eps=float(g("attention.layer_norm_epsilon", 1e-5)),
                tied_embeddings=tied,
                attn_bias=True,
                mlp_bias=True,
            )
        raise ValueError(f"unsupported GGUF architecture {arch!r}; groundup runs llama, gemma3 and gpt2 GGUF files")

    # -- Hugging Face ------------------------------------------------------
    @classmethod
    def from_hf(cls, c: dict[str, Any]) -> "ModelConfig":
        """Build from a Hugging Face `config.json` dict."""
        mt = c.get("model_type", "llama")
        if mt == "gemma3":  # multimodal wrappers nest the text config
            c = {**c, **c.get("text_config", {})}
            mt = "gemma3_text"
        if mt == "gpt2":
            return cls(
                vocab_size=c["vocab_size"], dim=c["n_embd"], n_layers=c["n_layer"], n_heads=c["n_head"],
                mlp_hidden=c.get("n_inner") or 4 * c["n_embd"], activation="gelu",
                context_length=c.get("n_positions", 1024), pos_embedding="learned", norm="layernorm",
                norm_eps=c.get("layer_norm_epsilon", 1e-5), tied_embeddings=True, attn_bias=True,
                mlp_bias=True, init_std=c.get("initializer_range", 0.02), arch="gpt2",
                name=c.get("_name_or_path", ""),
            )
        n_heads = c["num_attention_heads"]
        common = dict(
            vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
            n_heads=n_heads, n_kv_heads=c.get("num_key_value_heads", n_heads),
            head_dim=c.get("head_dim") or c["hidden_size"] // n_heads,
            mlp_hidden=c["intermediate_size"], context_length=c.get("max_position_embeddings", 2048),
            rope_base=float(c.get("rope_theta", 10000.0)), norm_eps=c.get("rms_norm_eps", 1e-6),
            tied_embeddings=bool(c.get("tie_word_embeddings", mt.startswith("gemma"))),
            init_std=c.get("initializer_range", 0.02), name=c.get("_name_or_path", ""),
            n_experts=c.get("num_local_experts", 0) or 0,
            n_experts_per_token=c.get("num_experts_per_tok", 0) or 0,
        )
        rs = c.get("rope_scaling")
        scaling = None
        if rs:
            kind = rs.get("rope_type") or rs.get("type")
            scaling = {**rs, "type": kind}
        if mt == "gemma3_text":
            sw_pattern = c.get("sliding_window_pattern", 6)
            return cls(
                **common, activation="geglu", rope_local_base=float(c.get("rope_local_base_freq", 10000.0)),
                rope_scaling=scaling, qk_norm=True, sliding_window=c.get("sliding_window", 512),
                sliding_window_pattern=sw_pattern, embed_scale=True, sandwich_norm=True,
                logit_softcap=c.get("final_logit_softcapping"),
                query_scale=c.get("query_pre_attn_scalar", common["head_dim"]) ** -0.5, arch="gemma3",
                extra={"hf_norm_offset": 1.0},
            )
        if mt in ("llama", "mistral", "qwen2", "granite", "mixtral"):
            act = "swiglu" if c.get("hidden_act", "silu") == "silu" else "geglu"
            return cls(**common, activation=act, rope_scaling=scaling, attn_bias=bool(c.get("attention_bias", mt == "qwen2")),
                       arch="llama")
        raise ValueError(f"unsupported Hugging Face model_type {mt!r}; groundup runs llama, mistral, qwen2, granite, gemma3 and gpt2")
