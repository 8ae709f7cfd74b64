"""DataLoader: windows from shards, shifted targets, determinism, resume, ranks without overlap, splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from groundup.data.loader import DataLoader
from groundup.data.shards import ShardWriter, load_tokenizer, write_manifest
from groundup.errors import GroundupError


def make_shards(root: Path, n_tokens: int, shard_tokens: int = 1000, val_tokens: int = 300) -> np.ndarray:
    """A manifest whose train stream is 0, 1, 2, ... (mod 60000) across several shards."""
    _, info = load_tokenizer("bytes")
    stream = np.arange(n_tokens) % 60_000
    w = ShardWriter(root / "train", "00000", "uint16", max_tokens=shard_tokens)
    for i in range(0, n_tokens, 97):  # "documents" of 97 tokens
        w.add(stream[i:i + 97].tolist())
    v = ShardWriter(root / "val", "00000", "uint16")
    v.add(list(range(val_tokens)))
    write_manifest(root, info, "uint16", {"train": w.close(), "val": v.close()}, [], 0.01)
    return stream


def test_windows_are_shifted_pairs_from_the_stream(tmp_path: Path):
    stream = make_shards(tmp_path, 5000)
    dl = DataLoader(tmp_path, batch_size=4, seq_len=16, shuffle=False)
    x, y = next(iter(dl))
    assert x.dtype == torch.int64 and x.shape == (4, 16) and y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert x[0].tolist() == stream[:16].tolist() and y[0].tolist() == stream[1:17].tolist()
    assert x[1].tolist() == stream[16:32].tolist()


def test_windows_cross_shard_boundaries(tmp_path: Path):
    stream = make_shards(tmp_path, 5000, shard_tokens=50)
    dl = DataLoader(tmp_path, batch_size=1, seq_len=37, shuffle=False, loop=False)
    seen = [x[0].tolist() + [y[0, -1].item()] for x, y in dl]
    assert len(seen) == (5000 - 1) // 37
    for w, tokens in enumerate(seen):
        assert tokens == stream[w * 37: w * 37 + 38].tolist()


def test_deterministic_given_seed_and_different_across_seeds(tmp_path: Path):
    make_shards(tmp_path, 20_000)
    a = [x for x, _ in _take(DataLoader(tmp_path, 2, 32, seed=1), 5)]
    b = [x for x, _ in _take(DataLoader(tmp_path, 2, 32, seed=1), 5)]
    c = [x for x, _ in _take(DataLoader(tmp_path, 2, 32, seed=2), 5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def _take(dl, n):
    it = iter(dl)
    return [next(it) for _ in range(n)]


def test_resume_from_state_dict_matches_uninterrupted(tmp_path: Path):
    make_shards(tmp_path, 6000)
    full = DataLoader(tmp_path, 3, 20, seed=7)
    per_epoch = len(full)
    ref = _take(full, per_epoch + 10)  # crosses an epoch boundary
    first = DataLoader(tmp_path, 3, 20, seed=7)
    _take(first, 25)
    state = first.state_dict()
    resumed = DataLoader(tmp_path, 3, 20, seed=7)
    resumed.load_state_dict(state)
    rest = _take(resumed, per_epoch + 10 - 25)
    for (x0, y0), (x1, y1) in zip(ref[25:], rest):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    other = DataLoader(tmp_path, 3, 21, seed=7)
    with pytest.raises(GroundupError, match="seq_len"):
        other.load_state_dict(state)


def test_ranks_read_disjoint_windows_covering_the_epoch(tmp_path: Path):
    make_shards(tmp_path, 8000)
    seen = []
    for rank in range(3):
        dl = DataLoader(tmp_path, 2, 25, seed=3, rank=rank, world_size=3)
        starts = {int(x[i, 0]) for x, _ in _take(dl, len(dl)) for i in range(2)}
        assert len(starts) == 2 * len(dl)
        seen.append(starts)
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    windows = (8000 - 1) // 25
    assert sum(len(s) for s in seen) > windows - 3 * 2 * 2  # only the remainder is dropped


def test_rank_and_world_size_default_to_torchrun_env(tmp_path: Path, monkeypatch):
    make_shards(tmp_path, 8000)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    env = DataLoader(tmp_path, 2, 25, seed=3)
    explicit = DataLoader(tmp_path, 2, 25, seed=3, rank=1, world_size=3)
    assert (env.rank, env.world_size) == (1, 3)
    assert torch.equal(next(iter(env))[0], next(iter(explicit))[0])


def test_val_split_and_single_pass(tmp_path: Path):
    make_shards(tmp_path, 3000, val_tokens=300)
    val = DataLoader(tmp_path, 2, 10, split="val")
    batches = list(val)
    assert len(batches) == len(val) == (299 // 10) // 2
    assert batches[0][0][0].tolist() == list(range(10))  # val is read in order
    assert len(list(val)) == len(batches)  # a second pass reads it again
    with pytest.raises(GroundupError, match="no 'test' split"):
        DataLoader(tmp_path, 2, 10, split="test")


def test_too_little_data_is_a_clear_error(tmp_path: Path):
    make_shards(tmp_path, 200)
    with pytest.raises(GroundupError, match="too few for one batch"):
        DataLoader(tmp_path, 8, 64)
