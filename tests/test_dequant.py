"""groundup.weights.dequant must match gguf.quants.dequantize bit for bit.

Real tensors: every type in the pulled SmolLM2-135M Q4_1 and Gemma-3-270M
Q4_K_M files, a few tensors per type, big ones cut to row slices, read with
groundup's header parser; plus GGUFReader's own `tensor.data` on SmolLM2,
including one whole 28M-parameter embedding (the huge-page path). Synthetic
blocks: types the files lack, made with `gguf.quants.quantize` where the gguf
package can quantize them, else random bytes with finite fp16 scales written in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

from groundup.weights import dequant
from groundup.weights.dequant import SUPPORTED, dequantize_tensor

ROWS = 48  # rows per slice of a big tensor
BIG = 1 << 20  # tensors with more elements than this are sliced


def _reference(raw: np.ndarray, qtype: str) -> torch.Tensor:
    arr = dequantize(raw, GGMLQuantizationType[qtype])
    return torch.from_numpy(np.array(arr, dtype=np.float32))


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal shape and float32 bits (so NaNs compare by payload too)."""
    return (
        got.dtype == torch.float32
        and got.shape == want.shape
        and torch.equal(got.contiguous().view(torch.int32), want.contiguous().view(torch.int32))
    )


def _check(raw: np.ndarray, qtype: str, shape: tuple[int, ...]) -> None:
    got = dequantize_tensor(raw, qtype, shape)
    want = _reference(raw, qtype).reshape(shape)
    assert _same(got, want), f"{qtype} {shape}: max diff {(got - want).abs().max()}"


def _spread(items: list[Any], k: int = 3) -> list[Any]:
    """Up to k items: first, middle(s), last."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def _check_file(path: Path, expect: set[str]) -> None:
    """A few tensors of each type via groundup's own header parser (GGUFReader takes 8-30 s here).

    Its `raw` is the flat read-only uint8 view a loader passes in; row slices of
    big tensors keep the test fast.
    """
    from groundup.weights.gguf import GGUFFile

    gf = GGUFFile(path, long_arrays=False)
    by_type: dict[str, list[Any]] = {}
    for t in gf.tensors.values():
        by_type.setdefault(t.qtype, []).append(t)
    assert set(by_type) == expect, f"{path.name} holds {sorted(by_type)}"
    for qtype, tensors in by_type.items():
        assert qtype in SUPPORTED
        for t in _spread(tensors):
            raw = gf.raw(t.name)
            if t.numel <= BIG or len(t.shape) < 2:
                _check(raw, qtype, t.shape)
                continue
            rows, row_bytes = t.shape[0], t.nbytes // t.shape[0]
            for start in _spread(list(range(rows - ROWS + 1))):
                piece = raw[start * row_bytes : (start + ROWS) * row_bytes]
                _check(piece, qtype, (ROWS, *t.shape[1:]))


def test_smollm2_q4_1_file(smollm2_path: Path) -> None:
    _check_file(smollm2_path, {"Q4_1", "Q8_0", "F32"})


def test_gemma3_q4_k_m_file(gemma3_path: Path) -> None:
    _check_file(gemma3_path, {"Q5_0", "Q4_K", "Q8_0", "Q6_K", "F32"})


def test_gguf_reader_tensor_data(smollm2_path: Path) -> None:
    """`GGUFReader`'s `tensor.data` (2-D uint8 rows, float32 for F32) as input, including the whole
    28M-parameter Q8_0 embedding: >= 32 MiB of output, so it lands in a huge-page mapping."""
    by_type: dict[str, list[Any]] = {}
    for t in GGUFReader(smollm2_path).tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t)
    emb = next(t for t in by_type["Q8_0"] if t.name == "token_embd.weight")
    assert int(emb.n_elements) * 4 >= dequant._HUGE_MIN_BYTES
    for t in [emb, *_spread(by_type["Q4_1"], 2), *_spread(by_type["F32"], 2)]:
        _check(t.data, t.tensor_type.name, tuple(int(x) for x in reversed(t.shape.tolist())))


# ---- synthetic blocks for the types the files lack -------------------------

_FP16_FIELDS = {  # byte offsets of the fp16 scales inside each block
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "TQ2_0": (64,),
}


def _random_blocks(qtype: str, n_blocks: int, seed: int) -> np.ndarray:
    """Random block bytes whose fp16 scales are finite: normal, zero, subnormal, negative."""
    rng = np.random.default_rng(seed)
    _, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    blocks = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in _FP16_FIELDS[qtype]:
        scale = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        scale[::7] = 0
        scale[3::11] = np.float16(3e-7)  # subnormal in fp16
        scale[5::13] = np.float16(-60000.0)
        assert np.isfinite(scale).all()
        blocks[:, off : off + 2] = scale.reshape(-1, 1).view(np.uint8)
    return blocks


def _random_weights(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.001, 2.0, size=(rows, 1))).astype(np.float32)
    w[0, :64] = 0.0  # all-zero blocks (d = 0)
    w[1, :32] = 5.0  # constant block
    return w


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_quantized_by_gguf(qtype: str) -> None:
    w = _random_weights(37, 256, seed=len(qtype) + ord(qtype[-1]))
    raw = quantize(w, GGMLQuantizationType[qtype])
    assert raw.dtype == np.uint8
    _check(raw, qtype, w.shape)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_random_blocks(qtype: str) -> None:
    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    rows, cols = 24, 4 * max(block, 64)
    raw = _random_blocks(qtype, rows * cols // block, seed=sum(qtype.encode())).reshape(rows, -1)
    _check(raw, qtype, (rows, cols))


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0", "Q6_K"])
def test_many_chunks(qtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk boundaries (including a short last chunk) change nothing."""
    monkeypatch.setattr(dequant, "_CHUNK_ELEMS", 3 * 256)
    monkeypatch.setattr(dequant, "_CHUNK_BY_TYPE", {})
    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    raw = _random_blocks(qtype, 41 * 1024 // block, seed=7).reshape(41, -1)
    _check(raw, qtype, (41, 1024))


def test_f16_every_bit_pattern() -> None:
    half = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    _check(half, "F16", (256, 256))  # signalling NaNs keep their payload, as in numpy


def test_bf16_every_bit_pattern() -> None:
    raw = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(256, 512)
    _check(raw, "BF16", (256, 256))


def test_bf16_quantized_by_gguf() -> None:
    w = _random_weights(16, 96, seed=3)
    raw = quantize(w, GGMLQuantizationType.BF16)
    _check(raw, "BF16", w.shape)


def test_f32_and_read_only_input() -> None:
    w = _random_weights(8, 40, seed=4)
    w.flags.writeable = False  # like the reader's memmap
    got = dequantize_tensor(w, "F32", (8, 40))
    assert torch.equal(got, torch.from_numpy(w.copy()))
    got += 1  # the result owns writable memory


def test_fallback_for_unsupported_type() -> None:
    assert "TQ2_0" not in SUPPORTED
    w = _random_weights(4, 256, seed=5)
    raw = quantize(w, GGMLQuantizationType.TQ2_0)
    _check(raw, "TQ2_0", w.shape)


def test_out_and_threads_restored() -> None:
    raw = _random_blocks("Q4_K", 12, seed=6).reshape(3, -1)
    out = torch.empty(3, 1024)
    before = torch.get_num_threads()
    got = dequantize_tensor(raw, "Q4_K", (3, 1024), out=out, threads=1)
    assert got.data_ptr() == out.data_ptr()
    assert torch.get_num_threads() == before
    assert _same(got, _reference(raw, "Q4_K").reshape(3, 1024))


def test_huge_page_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dequant, "_HUGE_MIN_BYTES", 1 << 20)
    raw = _random_blocks("Q8_0", (1 << 19) // 32, seed=8).reshape(64, -1)
    _check(raw, "Q8_0", (64, 8192))
    t = dequant.empty_f32((3 << 20) // 4 + 5)  # not a whole number of huge pages
    t.fill_(1.5)
    assert t.numel() == (3 << 20) // 4 + 5 and float(t.sum()) == 1.5 * t.numel()


def test_bad_sizes_raise() -> None:
    raw = _random_blocks("Q4_1", 4, seed=9)
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize_tensor(raw, "Q4_1", (2, 48))
    with pytest.raises(ValueError, match="needs"):
        dequantize_tensor(raw, "Q4_1", (2, 96))
    with pytest.raises(ValueError, match="out must be"):
        dequantize_tensor(raw, "Q4_1", (4, 32), out=torch.empty(4, 32, dtype=torch.float16))
