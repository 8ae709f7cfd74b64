"""Torch-vectorized GGUF dequantization, bit-exact with `gguf.quants.dequantize`.

`dequantize_tensor(raw, "Q4_1", shape)` turns the bytes that `gguf.GGUFReader`
exposes as `tensor.data` (or the same bytes flat) into a float32 torch tensor
of `shape` (PyTorch order). Every supported type gives exactly the float32 bits
of the gguf package's numpy reference: the same fp16 -> fp32 scale conversion
and the same float32 operations in the same order (`d * q`, then `+ m` or
`- dmin * m`). Every such product is exact in float32 (an 11-bit fp16
significand times integers of at most 13 bits), so only the final add rounds.

Block layouts (ggml, QK_K = 256; every scale `d`/`dmin` is a little-endian fp16):
  Q4_0  18 B/32:  d, qs[16]                       x = d * (nibble - 8)
  Q4_1  20 B/32:  d, m, qs[16]                    x = d * nibble + m
  Q5_0  22 B/32:  d, qh[4], qs[16]                x = d * ((nibble | hbit << 4) - 16)
  Q5_1  24 B/32:  d, m, qh[4], qs[16]             x = d * (nibble | hbit << 4) + m
  Q8_0  34 B/32:  d, qs[32] int8                  x = d * q
  Q2_K  84 B/256: scales[16], qs[64], d, dmin     x = d*(sc&15) * q2 - dmin*(sc>>4)
  Q3_K 110 B/256: hmask[32], qs[64], scales[12], d  x = d*(sc6-32) * (q2 - 4*!hbit)
  Q4_K 144 B/256: d, dmin, scales[12], qs[128]    x = d*sc6 * q4 - dmin*m6
  Q5_K 176 B/256: d, dmin, scales[12], qh[32], qs[128]
  Q6_K 210 B/256: ql[128], qh[64], scales[16] int8, d  x = d*sc * (q6 - 32)
In the 32-element types the low nibbles of qs[0..15] are elements 0..15 and
the high nibbles elements 16..31; bit j of the 4-byte qh is element j's 5th bit.

Speed: whole-array torch ops (no Python loop over blocks) in chunks of up to
1M output elements; one torch thread (see `THREADS`); outputs of 32 MiB and more
allocated in transparent huge pages (`madvise(MADV_HUGEPAGE)` where the kernel
offers it), which cuts the page-fault cost of a fresh 100 MB+ tensor several
fold. Types not in `SUPPORTED` fall back to `gguf.quants.dequantize`.
"""
from __future__ import annotations

import math
import mmap
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

QK_K = 256
_HUGE_PAGE = 2 << 20  # bytes; x86-64 / arm64 transparent huge page size
# Outputs from this size up go in huge pages. Smaller ones use torch.empty: glibc
# serves them from its heap (already faulted in) once a loader frees the previous
# tensor, which beats a fresh mapping; past 32 MiB glibc always maps afresh.
_HUGE_MIN_BYTES = 32 << 20
_CHUNK_ELEMS = 1 << 20  # output elements per chunk (4 MiB of float32): bounds the temporaries
# Q8_0 has only two passes over the output; chunks that fit in L2 pay for their calls.
_CHUNK_BY_TYPE = {"Q8_0": 1 << 18}

USE_HUGEPAGES: bool = hasattr(mmap, "MADV_HUGEPAGE")
"""Allocate outputs of 32 MiB and more in transparent huge pages (False: always torch.empty)."""

THREADS: int | None = 1
"""Torch intra-op threads while decoding (None: leave torch's setting alone). One by
default: on the shared 2-core machine each OpenMP op with 2 threads waits at a
barrier for a thread the scheduler has parked, and the whole SmolLM2 file took
25 s with 2 threads against 0.33 s with 1 (numpy's single thread: 1-3 s)."""

# (elements per block, bytes per block)
_BLOCK: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q2_K": (QK_K, 84), "Q3_K": (QK_K, 110), "Q4_K": (QK_K, 144), "Q5_K": (QK_K, 176), "Q6_K": (QK_K, 210),
}
_FLOAT = {"F32": 4, "F16": 2, "BF16": 2}
SUPPORTED: set[str] = set(_BLOCK) | set(_FLOAT)

_SH_2BIT = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)
_SH_BIT = torch.arange(8, dtype=torch.uint8)
# _SPREAD16[v]: an int64 whose byte k is 16 when bit k of the byte v is set, else 0
_SPREAD16 = torch.tensor(
    [sum(((v >> k) & 1) << (8 * k + 4) for k in range(8)) for v in range(256)], dtype=torch.int64
)

# Speed notes. Torch elementwise ops are fast on contiguous data but pay a fixed
# cost per row on strided slices such as the 16 quant bytes of each 20-byte
# block, and each call costs microseconds. So nibbles are split by whole-array
# ops on the raw blocks (`b & 15`, `b >> 4`) and put in element order by one
# `torch.cat`; integer fix-ups run on uint8; then one conversion into the float32
# output and the reference's float ops on it: `* d`, then `+ m` / `- dm`.


def _f16(blocks: torch.Tensor, byte_offset: int) -> torch.Tensor:
    """The fp16 scale at `byte_offset` of every block, as float32 of shape (n, 1)."""
    half = blocks.view(torch.float16)  # every block size here is even
    return half[:, byte_offset // 2 : byte_offset // 2 + 1].float()


def _nibbles32(b: torch.Tensor, off: int) -> torch.Tensor:
    """16 bytes at `off` -> (n, 32) uint8: their low nibbles, then their high nibbles."""
    return torch.cat(((b & 15)[:, off : off + 16], (b >> 4)[:, off : off + 16]), dim=1)


def _high_bits32(b: torch.Tensor, off: int) -> torch.Tensor:
    """The 32-bit little-endian mask at `off` -> (n, 32) uint8, 16 where bit j is set, else 0."""
    n = b.shape[0]
    return torch.take(_SPREAD16, b[:, off : off + 4].long()).view(torch.uint8).view(n, 32)


def _q4_0(b: torch.Tensor, out: torch.Tensor) -> None:
    q = _nibbles32(b, 2).view(torch.int8)
    q -= 8
    out.copy_(q)
    out.mul_(_f16(b, 0))


def _q4_1(b: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(_nibbles32(b, 4))
    out.mul_(_f16(b, 0)).add_(_f16(b, 2))


def _q5_0(b: torch.Tensor, out: torch.Tensor) -> None:
    q = _nibbles32(b, 6)
    q |= _high_bits32(b, 2)
    q = q.view(torch.int8)
    q -= 16
    out.copy_(q)
    out.mul_(_f16(b, 0))


def _q5_1(b: torch.Tensor, out: torch.Tensor) -> None:
    q = _nibbles32(b, 8)
    q |= _high_bits32(b, 4)
    out.copy_(q)
    out.mul_(_f16(b, 0)).add_(_f16(b, 2))


def _q8_0(b: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(b[:, 2:].view(torch.int8))
    out.mul_(_f16(b, 0))


def _q2_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    sc = b[:, :16]
    dl = (_f16(b, 80) * (sc & 15)).unsqueeze(-1)  # (n, 16, 1)
    ml = (_f16(b, 82) * (sc >> 4)).unsqueeze(-1)
    q = (b[:, 16:80].reshape(n, 2, 1, 32) >> _SH_2BIT.view(1, 1, 4, 1)) & 3  # (n, 2, 4, 32)
    o = out.view(n, 16, 16)
    o.copy_(q.view(n, 16, 16))
    o.mul_(dl).sub_(ml)


def _q3_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    s = b[:, 96:108]
    lo = torch.cat((s[:, :8] & 15, s[:, :8] >> 4), dim=1)  # (n, 16) low 4 bits of the 16 scales
    hi = (s[:, 8:].unsqueeze(1) >> _SH_2BIT.view(1, 4, 1)).reshape(n, 16) & 3
    sc = (lo | (hi << 4)).view(torch.int8) - 32
    dl = (_f16(b, 108) * sc).unsqueeze(-1)  # (n, 16, 1)
    ql = (b[:, 32:96].reshape(n, 2, 1, 32) >> _SH_2BIT.view(1, 1, 4, 1)) & 3  # (n, 2, 4, 32)
    hb = (b[:, :32].reshape(n, 1, 1, 32) >> _SH_BIT.view(1, 1, 8, 1)) & 1  # (n, 1, 8, 32)
    q = ql.view(n, 16, 16).view(torch.int8) - ((hb ^ 1) << 2).view(n, 16, 16).view(torch.int8)
    o = out.view(n, 16, 16)
    o.copy_(q)
    o.mul_(dl)


def _scale_min_k4(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bytes 4..15 of Q4_K/Q5_K blocks -> eight 6-bit scales and eight 6-bit mins, (n, 8) uint8.

    Bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7,
    bytes 4-7 the same for the mins, bytes 8-11 the low 4 bits of scale/min
    4-7. Done four bytes at a time on int32 words; the masks drop every bit a
    shift carries across a byte boundary.
    """
    w = b[:, 4:16].contiguous().view(torch.int32)  # (n, 3)
    d, m, md = w[:, 0], w[:, 1], w[:, 2]
    sc = torch.stack((d & 0x3F3F3F3F, (md & 0x0F0F0F0F) | ((d >> 2) & 0x30303030)), dim=1)
    mn = torch.stack((m & 0x3F3F3F3F, ((md >> 4) & 0x0F0F0F0F) | ((m >> 2) & 0x30303030)), dim=1)
    return sc.view(torch.uint8), mn.view(torch.uint8)


def _k4_nibbles(b: torch.Tensor, off: int) -> torch.Tensor:
    """128 bytes at `off` -> (n, 8, 32) uint8: per 32-byte group, low nibbles then high nibbles."""
    n = b.shape[0]
    lo = (b & 15)[:, off : off + 128].view(n, 4, 1, 32)
    hi = (b >> 4)[:, off : off + 128].view(n, 4, 1, 32)
    return torch.cat((lo, hi), dim=2).view(n, 8, 32)


def _q4_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    sc, mn = _scale_min_k4(b)
    dl = (_f16(b, 0) * sc).unsqueeze(-1)  # (n, 8, 1)
    ml = (_f16(b, 2) * mn).unsqueeze(-1)
    o = out.view(n, 8, 32)
    o.copy_(_k4_nibbles(b, 16))
    o.mul_(dl).sub_(ml)


def _q5_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    sc, mn = _scale_min_k4(b)
    dl = (_f16(b, 0) * sc).unsqueeze(-1)
    ml = (_f16(b, 2) * mn).unsqueeze(-1)
    q = _k4_nibbles(b, 48)
    hb = b[:, 16:48].view(n, 1, 32) >> _SH_BIT.view(1, 8, 1)  # (n, 8, 32): qh[j] >> group
    hb <<= 4
    hb &= 16
    q |= hb
    o = out.view(n, 8, 32)
    o.copy_(q)
    o.mul_(dl).sub_(ml)


def _q6_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    dl = (_f16(b, 208) * b[:, 192:208].view(torch.int8)).unsqueeze(-1)  # (n, 16, 1)
    lo = (b & 15)[:, :128].view(n, 2, 1, 64)
    hi = (b >> 4)[:, :128].view(n, 2, 1, 64)
    q = torch.cat((lo, hi), dim=2)  # (n, 2, 2, 64) == (n, 2 halves, 4 groups, 32)
    qh = b[:, 128:192]  # 2 bits of group 4h+k sit at bits 2k of qh[32h + j]
    planes = torch.stack(((qh << 4) & 48, (qh << 2) & 48, qh & 48, (qh >> 2) & 48), dim=1)  # (n, k, 64)
    q.view(n, 2, 4, 32).bitwise_or_(planes.view(n, 4, 2, 32).transpose(1, 2))
    q = q.view(torch.int8)
    q -= 32
    o = out.view(n, 16, 16)
    o.copy_(q.view(n, 16, 16))
    o.mul_(dl)


_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}


def _bytes_view(raw: np.ndarray) -> torch.Tensor:
    """A uint8 torch view of `raw`'s bytes (no copy; read-only memory is fine, it is never written)."""
    arr = raw if raw.flags.c_contiguous else np.ascontiguousarray(raw)
    if arr.dtype != np.uint8:
        arr = arr.reshape(-1).view(np.uint8)
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we only read it
        return torch.from_numpy(arr)


def empty_f32(numel: int) -> torch.Tensor:
    """An uninitialized float32 tensor; large ones (>= 32 MiB) go in transparent huge pages.

    The memory is an anonymous mmap kept alive by the tensor (torch.frombuffer
    holds a reference) and unmapped when the tensor is freed. Only the whole
    2 MiB-aligned pages inside the tensor are marked MADV_HUGEPAGE, so no huge
    page sticks out past its end.
    """
    nbytes = numel * 4
    if not USE_HUGEPAGES or nbytes < _HUGE_MIN_BYTES:
        return torch.empty(numel, dtype=torch.float32)
    try:
        mm = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        base = torch.frombuffer(mm, dtype=torch.uint8, count=1).data_ptr()
        start = -base % _HUGE_PAGE
        whole = (nbytes // _HUGE_PAGE) * _HUGE_PAGE
        if whole:
            mm.madvise(mmap.MADV_HUGEPAGE, start, whole)
        return torch.frombuffer(mm, dtype=torch.float32, count=numel, offset=start)
    except (OSError, ValueError):
        return torch.empty(numel, dtype=torch.float32)


def _keep_f16_nan_bits(half_bits: torch.Tensor, flat: torch.Tensor) -> None:
    """Torch's fp16 -> fp32 quiets signalling NaNs; numpy keeps the payload. Patch those in."""
    magnitude = half_bits & 0x7FFF
    if not bool((magnitude > 0x7C00).any()):
        return
    idx = (magnitude > 0x7C00).nonzero().view(-1)
    h = half_bits[idx].to(torch.int32)
    bits = ((h & 0x8000) << 16) | 0x7F800000 | ((h & 0x03FF) << 13)
    flat.view(torch.int32)[idx] = bits


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads (None or 0: unchanged), then restore the old count."""
    before = torch.get_num_threads()
    if not n or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_size(got: int, want: int, qtype: str, shape: tuple[int, ...]) -> None:
    if got != want:
        raise ValueError(f"{qtype} tensor of shape {shape} needs {want} bytes, got {got}")


def dequantize_tensor(
    raw_bytes: np.ndarray,
    qtype_name: str,
    shape: tuple[int, ...],
    out: torch.Tensor | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """Dequantize one GGUF tensor to float32, bit-identical to `gguf.quants.dequantize`.

    raw_bytes: the reader's `tensor.data` (uint8 for quantized types and BF16,
    float32/float16 for F32/F16), the same bytes as a flat uint8 array, or a row
    slice of either (must be contiguous or it is copied). qtype_name: a
    `gguf.GGMLQuantizationType` name. shape: PyTorch order (outermost first).
    out: optional contiguous float32 tensor with `numel` elements to write into.
    threads: torch intra-op threads while decoding (default `THREADS`; None there
    means leave torch's setting alone); the previous setting is restored after.
    Returns a float32 tensor of `shape` that owns (or is `out`'s) writable memory.
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if qtype_name not in SUPPORTED:
        return _fallback(raw_bytes, qtype_name, shape)
    if out is None:
        out = empty_f32(numel)
    elif out.dtype != torch.float32 or out.numel() != numel or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of {numel} elements")
    with _torch_threads(THREADS if threads is None else threads):
        _decode(_bytes_view(raw_bytes), qtype_name, shape, out.view(-1))
    return out.view(shape)


def _decode(src: torch.Tensor, qtype_name: str, shape: tuple[int, ...], flat: torch.Tensor) -> None:
    numel = flat.numel()
    if qtype_name in _FLOAT:
        src = src.view(-1)
        _check_size(src.numel(), numel * _FLOAT[qtype_name], qtype_name, shape)
        if qtype_name == "F32":
            flat.copy_(src.view(torch.float32))
        elif qtype_name == "F16":
            flat.copy_(src.view(torch.float16))
            _keep_f16_nan_bits(src.view(torch.int16), flat)
        else:  # BF16: the 16 bits become the high half of the float32 word
            as_int = flat.view(torch.int32)
            as_int.copy_(src.view(torch.int16))
            as_int <<= 16
        return

    block, size = _BLOCK[qtype_name]
    if shape and shape[-1] % block:
        raise ValueError(f"{qtype_name} rows must be a multiple of {block} elements, got shape {shape}")
    n_blocks = numel // block
    _check_size(src.numel(), n_blocks * size, qtype_name, shape)
    blocks = src.view(n_blocks, size)
    dst = flat.view(n_blocks, block)
    kernel = _KERNELS[qtype_name]
    step = max(1, _CHUNK_BY_TYPE.get(qtype_name, _CHUNK_ELEMS) // block)
    for i in range(0, n_blocks, step):
        kernel(blocks[i : i + step], dst[i : i + step])


def _fallback(raw_bytes: np.ndarray, qtype_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    arr = dequantize(np.asarray(raw_bytes), GGMLQuantizationType[qtype_name])
    arr = np.array(arr, dtype=np.float32, copy=True).reshape(shape)  # own, writable memory
    return torch.from_numpy(arr)
