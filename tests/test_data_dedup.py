"""Dedup: exact and MinHash-LSH near-duplicate removal, and its split across processes."""
from __future__ import annotations

import json
import os
import pickle
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import groundup.data.dedup as dedup
from groundup.data.dedup import (Dedup, DedupIndex, MinHashParams, dedup_key, estimated_jaccard, exact_hash,
                                 minhash_signature, normalize)
from groundup.data.document import Document

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def c4_texts() -> list[str]:
    p = DATA / "llamafactory" / "c4_demo.jsonl"
    if not p.is_file():
        pytest.skip(f"shared data file {p} is missing (see shared/data/SOURCES.md)")
    return [json.loads(line)["text"] for line in p.open()]


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = normalize(text).split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def mutate(text: str, fraction: float, rng: random.Random) -> str:
    w = normalize(text).split()
    for i in rng.sample(range(len(w)), int(len(w) * fraction)):
        w[i] = f"zz{i}x"
    return " ".join(w)


def test_normalize_and_exact_hash():
    assert normalize("Héllo,   WORLD!\n3.14 apples; 1,000 pears") == "hello world 0 apples 0 pears"
    assert exact_hash("The cat sat.") == exact_hash("the  CAT sat")
    assert exact_hash("The cat sat.") != exact_hash("The cat sat down.")


def test_stage_drops_exact_and_near_duplicates(c4_texts):
    rng = random.Random(0)
    base = max(c4_texts, key=len)
    stage = Dedup()
    shouted = base.translate(str.maketrans(string.ascii_lowercase, string.ascii_uppercase))
    docs = [base, "  " + shouted.replace(" ", " \n ") + "!!", mutate(base, 0.01, rng), c4_texts[0], c4_texts[1]]
    out = [stage.apply(Document(text=t, id=str(i))) for i, t in enumerate(docs)]
    assert isinstance(out[0], Document)
    assert out[1] == "dedup:exact"
    assert out[2] == "dedup:near"
    assert isinstance(out[3], Document) and isinstance(out[4], Document)
    assert len(stage.index) == 3


def test_signature_estimates_jaccard(c4_texts):
    rng = random.Random(1)
    errors = []
    for text in c4_texts:
        if len(normalize(text).split()) < 150:
            continue
        other = mutate(text, 0.06, rng)
        errors.append(estimated_jaccard(minhash_signature(text), minhash_signature(other)) - jaccard(text, other))
    errors = np.array(errors)
    assert len(errors) > 100
    # 112 hashes: standard error sqrt(J(1-J)/112) <= 0.047; the mean error shrinks with the number of pairs
    assert abs(errors.mean()) < 0.015 and errors.std() < 0.06


def test_lsh_catches_similar_pairs_and_ignores_dissimilar(c4_texts):
    rng = random.Random(2)
    long_texts = [t for t in c4_texts if len(normalize(t).split()) > 300][:40]
    assert len(long_texts) >= 20
    caught = {}
    for frac in (0.005, 0.15):
        hits = 0
        for text in long_texts:
            index = DedupIndex()
            index.check(dedup_key(text))
            hits += index.check(dedup_key(mutate(text, frac, rng))) == "near"
        caught[frac] = hits / len(long_texts)
    # 0.5% of words changed -> Jaccard ~0.97: caught ~always; 15% -> Jaccard ~0.3: practically never
    assert caught[0.005] >= 0.95 and caught[0.15] <= 0.05


def test_different_documents_are_all_kept(c4_texts):
    index = DedupIndex()
    results = [index.check(dedup_key(t)) for t in c4_texts]
    # the demo file is 300 distinct C4 pages; a duplicate call would have to share a whole 8-row band
    assert results.count(None) >= 298


def test_keys_from_workers_decide_like_the_stage(c4_texts):
    rng = random.Random(3)
    texts = c4_texts[:30] + [mutate(t, 0.01, rng) for t in c4_texts[:10]] + c4_texts[:5]
    keys = [pickle.loads(pickle.dumps(dedup_key(t))) for t in texts]  # as sent back from a worker
    index = DedupIndex()
    split = [index.check(k) for k in keys]
    stage = Dedup()
    whole = [r if isinstance(r, str) else None for r in (stage.apply(Document(text=t, id="x")) for t in texts)]
    assert split == [None if w is None else w.split(":")[1] for w in whole]
    assert split[30:40].count("near") >= 9 and split[40:] == ["exact"] * 5


def test_signatures_are_the_same_in_another_process():
    text = "A short text about rivers, ice and spring floods in the north " * 5
    code = ("import sys; from groundup.data.dedup import minhash_signature; "
            "sys.stdout.write(','.join(map(str, minhash_signature(sys.argv[1]).tolist())))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, env=env, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert [int(x) for x in out.stdout.split(",")] == minhash_signature(text).tolist()


def test_short_and_empty_texts():
    sig = minhash_signature("two words")
    assert sig.shape == (112,) and sig.dtype == np.uint32
    assert not np.array_equal(sig, minhash_signature("three words here"))
    index = DedupIndex()
    assert index.check(dedup_key("")) is None and index.check(dedup_key("  ...  ")) == "exact"


def test_chunked_minima_equal_one_block(monkeypatch):
    text = " ".join(f"w{i}" for i in range(20_000))  # ~20k shingles: five blocks of 4096
    chunked = minhash_signature(text)
    monkeypatch.setattr(dedup, "_CHUNK", 1 << 30)
    assert np.array_equal(chunked, minhash_signature(text))


def test_params_change_the_layout():
    p = MinHashParams(num_bands=20, rows_per_band=5, seed=7)
    key = dedup_key("some text to hash " * 10, p)
    assert len(key.bands) == 20 and minhash_signature("x y z", p).shape == (100,)
    assert not np.array_equal(minhash_signature("a b c d e f", p), minhash_signature("a b c d e f"))
