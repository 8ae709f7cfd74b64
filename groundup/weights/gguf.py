"""Read GGUF files: metadata, tensor shapes, and dequantized weights mapped to groundup names.

The header is parsed here (memory-mapped, struct/numpy); tensors are dequantized
by weights/dequant.py (torch, bit-exact with the `gguf` package's numpy
dequantization, which remains the fallback for rarer types), so
F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q2_K..Q6_K and IQ* all load. Llama-family Q/K weights are stored permuted for llama.cpp's
interleaved RoPE; `unpermute_qk` restores the Hugging Face "half" layout that
`rope.apply_rope` uses. A truncated or corrupted file becomes one GroundupError
line naming the file and the problem.
"""
from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from groundup.config import ModelConfig
from groundup.errors import GroundupError

GGUF_MAGIC = b"GGUF"

# GGUF tensor name -> groundup parameter name (per block, then global)
_BLOCK_MAP = {
    "attn_norm.weight": "attn_norm.weight",
    "attn_norm.bias": "attn_norm.bias",
    "attn_q.weight": "attn.wq.weight",
    "attn_q.bias": "attn.wq.bias",
    "attn_k.weight": "attn.wk.weight",
    "attn_k.bias": "attn.wk.bias",
    "attn_v.weight": "attn.wv.weight",
    "attn_v.bias": "attn.wv.bias",
    "attn_output.weight": "attn.wo.weight",
    "attn_output.bias": "attn.wo.bias",
    "attn_q_norm.weight": "attn.q_norm.weight",
    "attn_k_norm.weight": "attn.k_norm.weight",
    "post_attention_norm.weight": "post_attn_norm.weight",
    "ffn_norm.weight": "mlp_norm.weight",
    "ffn_norm.bias": "mlp_norm.bias",
    "post_ffw_norm.weight": "post_mlp_norm.weight",
    "ffn_gate.weight": "mlp.w_gate.weight",
    "ffn_up.weight": "mlp.w_up.weight",
    "ffn_up.bias": "mlp.w_up.bias",
    "ffn_down.weight": "mlp.w_down.weight",
    "ffn_down.bias": "mlp.w_down.bias",
    "ffn_gate_inp.weight": "mlp.router.weight",
}
_GLOBAL_MAP = {
    "token_embd.weight": "tok_emb.weight",
    "position_embd.weight": "pos_emb.weight",
    "output_norm.weight": "norm.weight",
    "output_norm.bias": "norm.bias",
    "output.weight": "lm_head.weight",
}
_BLK = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # PyTorch order (outermost first)
    qtype: str  # e.g. "Q4_1"
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


class GGUFFile:
    """A memory-mapped GGUF file: `meta` (key -> python value) and `tensors`.

    The header is parsed here with `struct`/numpy (GGUFReader builds a numpy view
    per vocabulary entry and takes 8-30 s on these vocabularies; the tests check
    this parser against it field by field). `long_arrays=False` keeps long
    arrays (the vocabulary) only as their length, for fast metadata-only reads.
    """

    def __init__(self, path: str | Path, long_arrays: bool = True) -> None:
        self.path = Path(path)
        check_header(self.path)
        self._file = open(self.path, "rb")
        self.buf = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.meta, self.tensors = _parse(self.buf, long_arrays)
        except (struct.error, IndexError, KeyError, ValueError, UnicodeDecodeError, OverflowError) as e:
            raise GroundupError(f"{self.path}: truncated or corrupted GGUF header ({type(e).__name__}: {e})") from None
        size = len(self.buf)
        end = max((t.offset + t.nbytes for t in self.tensors.values()), default=0)
        if end > size:
            raise GroundupError(f"{self.path}: truncated GGUF file ({size:,} bytes, its tensors need {end:,}); "
                                "re-download it")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: t.shape for n, t in self.tensors.items()}

    def types(self) -> dict[str, str]:
        return {n: t.qtype for n, t in self.tensors.items()}

    def stored_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def config(self) -> ModelConfig:
        try:
            return ModelConfig.from_gguf(self.meta, self.shapes())
        except (KeyError, ValueError, TypeError) as e:
            raise GroundupError(f"{self.path}: cannot read the model config from GGUF metadata ({e})") from None

    def raw(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        return np.frombuffer(self.buf, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def dequantize(self, name: str) -> torch.Tensor:
        """One tensor as float32 torch in PyTorch shape order."""
        from groundup.weights.dequant import dequantize_tensor

        t = self.tensors[name]
        return dequantize_tensor(self.raw(name), t.qtype, t.shape)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32, 7: np.bool_,
       10: np.uint64, 11: np.int64, 12: np.float64}
_LONG = 256


def _parse(buf, long_arrays: bool) -> tuple[dict[str, Any], dict[str, GGUFTensor]]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    pos = 24

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", buf, pos)
        s = buf[pos + 8:pos + 8 + n].decode("utf-8", errors="replace")
        pos += 8 + n
        return s

    def value(t: int) -> Any:
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if et == 8:
                if n > _LONG and not long_arrays:
                    for _ in range(n):
                        pos += 8 + struct.unpack_from("<Q", buf, pos)[0]
                    return ArrayStub(n)
                return [string() for _ in range(n)]
            if et == 9:
                return [value(9) for _ in range(n)]
            arr = np.frombuffer(buf, dtype=_NP[et], count=n, offset=pos)
            pos += arr.nbytes
            if n > _LONG and not long_arrays:
                return ArrayStub(n)
            return arr.tolist()
        fmt = _SCALARS[t]
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        (t,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        meta[key] = value(t)
    infos = []
    for _ in range(n_tensors):
        name = string()
        (nd,) = struct.unpack_from("<I", buf, pos)
        ne = struct.unpack_from(f"<{nd}Q", buf, pos + 4)
        qt, off = struct.unpack_from("<IQ", buf, pos + 4 + 8 * nd)
        pos += 4 + 8 * nd + 12
        infos.append((name, ne, GGMLQuantizationType(qt), off))
    align = int(meta.get("general.alignment", 32))
    data_start = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, qtype, off in infos:
        block, size = GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(ne, dtype=np.int64)) // block * size
        shape = tuple(int(x) for x in reversed(ne))
        tensors[name] = GGUFTensor(name, shape, qtype.name, data_start + off, nbytes)
    return meta, tensors


class ArrayStub:
    """A long GGUF array (e.g. a 262k-entry vocabulary) kept only as its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"<array of {self.n}>"


def check_header(path: Path) -> None:
    if not path.is_file():
        raise GroundupError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise GroundupError(f"{path}: not a GGUF file (starts with {head[:4]!r}, expected b'GGUF')")
    if len(head) < 24:
        raise GroundupError(f"{path}: truncated GGUF file ({len(head)} bytes)")


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs -> half layout)."""
    out = w.shape[0]
    hd = out // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, hd // 2, 2, *rest).transpose(1, 2).reshape(out, *rest)


def gguf_to_groundup_name(name: str) -> str | None:
    m = _BLK.match(name)
    if m:
        tail = _BLOCK_MAP.get(m.group(2))
        return f"layers.{m.group(1)}.{tail}" if tail else None
    return _GLOBAL_MAP.get(name)


def iter_state_dict(gf: GGUFFile, cfg: ModelConfig, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (groundup name, tensor) one at a time so peak memory stays near one tensor."""
    permute = cfg.arch in ("llama", "mistral", "granite")
    for name, t in gf.tensors.items():
        if name == "rope_freqs.weight":
            continue
        if name.endswith("attn_qkv.weight") or name.endswith("attn_qkv.bias"):  # GPT-2 fused
            w = gf.dequantize(name)
            m = _BLK.match(name)
            kind = name.rsplit(".", 1)[1]
            q, k, v = w.split([cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim])
            for part, tensor in (("wq", q), ("wk", k), ("wv", v)):
                yield f"layers.{m.group(1)}.attn.{part}.{kind}", tensor.to(dtype)
            continue
        gname = gguf_to_groundup_name(name)
        if gname is None:
            raise GroundupError(f"{gf.path}: unexpected tensor {name!r} for architecture {cfg.arch}")
        w = gf.dequantize(name)
        if permute and gname.endswith("attn.wq.weight"):
            w = unpermute_qk(w, cfg.n_heads)
        elif permute and gname.endswith("attn.wk.weight"):
            w = unpermute_qk(w, cfg.n_kv_heads)
        keep_fp32 = "norm" in gname  # norm weights stay float32 (norms compute in float32)
        yield gname, (w if keep_fp32 else w.to(dtype))
