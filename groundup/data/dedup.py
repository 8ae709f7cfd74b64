"""Duplicate removal: exact (hash of normalized text) and near (MinHash LSH over word 5-grams).

FineWeb's setting: text normalized (lower-cased, numbers -> "0", punctuation
removed, accents stripped, whitespace collapsed), word 5-gram shingles,
14 bands x 8 hashes = 112 MinHash values. Two documents land in the same
bucket of a band when all 8 values of that band agree; sharing any bucket
marks the later one a near-duplicate. The chance of that is
1 - (1 - s^8)^14 for Jaccard similarity s: about 92% at s = 0.8, 50% near
s = 0.72 and under 1% at s = 0.5.

The work splits in two so a multi-process runner can dedup globally:
`dedup_key(text)` (the expensive part: normalize, shingle, hash) runs in any
worker and returns a small picklable `DedupKey`; a single `DedupIndex` in one
process decides, in order, with `index.check(key)`. `Dedup` is the same as
one stateful stage for a single process.

Hashing is our own (numpy, vectorized): each word gets a stable 64-bit
blake2b hash, a shingle hash combines n word hashes, and each of the 112
permutations is a multiply-add-shift hash h(x) = (a*x + b) >> 32 with
random odd a, drawn once from `seed` so every process agrees.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

import numpy as np
import regex

from groundup.data.document import Document

_NUMBER = regex.compile(r"\p{Nd}+(?:[.,]\p{Nd}+)?")
_PUNCT_OR_SYMBOL = regex.compile(r"[\p{P}\p{S}]+")
_MARKS = regex.compile(r"\p{Mn}+")
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SHINGLE_MUL = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 4096  # shingles per block when taking minima (bounds memory for huge documents)
_WORD_CACHE: dict[str, int] = {}
_WORD_CACHE_MAX = 1 << 20


def normalize(text: str) -> str:
    """Lower-case, numbers -> 0, punctuation and symbols removed, accents stripped, single spaces."""
    text = _NUMBER.sub("0", text.lower())
    text = _PUNCT_OR_SYMBOL.sub(" ", text)
    if not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFD", text))
    return " ".join(text.split())


def exact_hash(text: str) -> bytes:
    """16-byte digest of the normalized text: equal for texts that differ only in case, spacing, punctuation."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()


def _word_hash(word: str) -> int:
    h = _WORD_CACHE.get(word)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        if len(_WORD_CACHE) >= _WORD_CACHE_MAX:
            _WORD_CACHE.clear()
        _WORD_CACHE[word] = h
    return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the whole 64-bit output."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """uint64 hashes of the normalized text's word n-grams (one shingle of all words if fewer than n)."""
    word_list = normalize(text).split()
    words = np.fromiter((_word_hash(w) for w in word_list), dtype=np.uint64, count=len(word_list))
    n = min(ngram, len(words))
    if n == 0:
        return np.zeros(1, dtype=np.uint64)
    count = len(words) - n + 1
    with np.errstate(over="ignore"):
        h = words[:count].copy()
        for j in range(1, n):
            h = h * _SHINGLE_MUL + words[j : j + count]
        return np.unique(_mix(h))


@dataclass(frozen=True)
class MinHashParams:
    """The 14 x 8 MinHash layout and the permutation constants every process must share."""

    num_bands: int = 14
    rows_per_band: int = 8
    ngram: int = 5
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)
        return a, b


_COEFFS: dict[MinHashParams, tuple[np.ndarray, np.ndarray]] = {}


def minhash_signature(text: str, params: MinHashParams = MinHashParams()) -> np.ndarray:
    """The MinHash signature: `params.num_perm` uint32 values (min of each permuted shingle hash)."""
    if params not in _COEFFS:
        _COEFFS[params] = params.coefficients()
    a, b = _COEFFS[params]
    shingles = shingle_hashes(text, params.ngram)
    sig = np.full(params.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(shingles), _CHUNK):
            block = shingles[start : start + _CHUNK, None]
            np.minimum(sig, ((block * a + b) >> np.uint64(32)).min(axis=0), out=sig)
    return sig.astype(np.uint32)


def band_hashes(signature: np.ndarray, params: MinHashParams = MinHashParams()) -> tuple[int, ...]:
    """One 64-bit bucket id per band (its rows hashed together, salted with the band number)."""
    rows = signature.astype(np.uint64).reshape(params.num_bands, params.rows_per_band)
    with np.errstate(over="ignore"):
        h = np.arange(params.num_bands, dtype=np.uint64) * _SHINGLE_MUL
        for j in range(params.rows_per_band):
            h = _mix(h ^ rows[:, j])
    return tuple(h.tolist())


@dataclass(frozen=True)
class DedupKey:
    """What the deciding process needs about one document: small enough to send between processes."""

    exact: bytes
    bands: tuple[int, ...]


def dedup_key(text: str, params: MinHashParams = MinHashParams()) -> DedupKey:
    """Exact hash plus LSH bucket ids of a text (the expensive half of dedup; run it in workers)."""
    return DedupKey(exact_hash(text), band_hashes(minhash_signature(text, params), params))


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of MinHash values two signatures share: an estimate of their shingle sets' Jaccard."""
    return float(np.mean(sig_a == sig_b))


class DedupIndex:
    """The deciding half: remembers every kept document's exact hash and band buckets."""

    def __init__(self, *, exact: bool = True, near: bool = True):
        self.exact = exact
        self.near = near
        self._exact: set[bytes] = set()
        self._buckets: list[set[int]] = []

    def __len__(self) -> int:
        return len(self._exact)

    def check(self, key: DedupKey) -> str | None:
        """"exact" or "near" when the document duplicates one seen before, else None (and remember it)."""
        if self.exact and key.exact in self._exact:
            return "exact"
        if not self._buckets:
            self._buckets = [set() for _ in key.bands]
        if self.near and any(h in bucket for h, bucket in zip(key.bands, self._buckets)):
            return "near"
        self._exact.add(key.exact)
        for h, bucket in zip(key.bands, self._buckets):
            bucket.add(h)
        return None


class Dedup:
    """Stage: drop exact and near duplicates of documents this stage has already kept (stateful)."""

    name = "dedup"

    def __init__(self, *, num_bands: int = 14, rows_per_band: int = 8, ngram: int = 5, seed: int = 1,
                 exact: bool = True, near: bool = True):
        self.params = MinHashParams(num_bands, rows_per_band, ngram, seed)
        self.index = DedupIndex(exact=exact, near=near)

    def apply(self, doc: Document) -> Document | str:
        why = self.index.check(dedup_key(doc.text, self.params))
        return doc if why is None else f"{self.name}:{why}"
