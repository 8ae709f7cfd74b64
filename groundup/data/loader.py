"""DataLoader: stream (x, y) training windows out of token shards, deterministic, resumable, rank-aware.

The shards of one split (see shards.py) are memory-mapped and read as one token stream. The
stream is cut into windows of `seq_len + 1` tokens; window w covers tokens
[w*seq_len, w*seq_len + seq_len], so neighbours share only their boundary token and every
token is a target exactly once per epoch. Each epoch visits the windows in an order drawn from
`seed + epoch` (or in file order with `shuffle=False`). Rank r of `world_size` (default: the
RANK and WORLD_SIZE that torchrun sets, else 0 and 1) takes positions r, r + world_size, ...
of that order, so ranks never share a window and together cover all but the last few (each
rank gets the same number of batches; the leftover windows are dropped).

A batch is `x, y`: int64 tensors [batch_size, seq_len], y shifted by one. `state_dict()` is
(epoch, batch within the epoch) and the settings it depends on; `load_state_dict` continues
from there, yielding exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from groundup.data.shards import read_manifest
from groundup.errors import GroundupError


class DataLoader:
    """Iterate batches of (x, y) from a tokenized directory; see the module docstring."""

    def __init__(self, path: str | os.PathLike, batch_size: int, seq_len: int, *, split: str = "train",
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool | None = None, loop: bool | None = None) -> None:
        # torchrun sets RANK and WORLD_SIZE; explicit arguments win
        rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        if batch_size < 1 or seq_len < 1:
            raise GroundupError(f"batch_size and seq_len must be positive (got {batch_size}, {seq_len})")
        if not 0 <= rank < world_size:
            raise GroundupError(f"rank {rank} is outside world_size {world_size}")
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if split not in self.manifest["splits"]:
            raise GroundupError(f"{path} has no {split!r} split (it has {', '.join(self.manifest['splits'])})")
        self.split, self.batch_size, self.seq_len = split, batch_size, seq_len
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle = (split == "train") if shuffle is None else shuffle
        self.loop = (split == "train") if loop is None else loop
        dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        shards = [s for s in self.manifest["splits"][split]["shards"] if s["tokens"] > 0]
        self._maps = [np.memmap(self.path / s["file"], dtype=dtype, mode="r") for s in shards]
        self._starts = np.cumsum([0] + [len(m) for m in self._maps])  # token offset of each shard
        self.tokens = int(self._starts[-1])
        self.windows = max(0, (self.tokens - 1) // seq_len)
        self.batches_per_epoch = (self.windows // world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise GroundupError(f"the {split} split of {path} has {self.tokens:,} tokens: too few for one batch of "
                                f"{batch_size} x {seq_len} per rank over {world_size} rank(s); use a smaller "
                                "batch or sequence length, or more data")
        self.epoch = 0
        self.batch = 0  # next batch within the epoch

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return self.batches_per_epoch

    def _order(self, epoch: int) -> np.ndarray:
        """This rank's window indices for `epoch`, in visiting order."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.windows)
        else:
            order = np.arange(self.windows)
        mine = order[self.rank::self.world_size]
        return mine[: self.batches_per_epoch * self.batch_size]

    def _window(self, w: int) -> np.ndarray:
        """Tokens [w*seq_len, w*seq_len + seq_len + 1), read across shard boundaries when needed."""
        start, end = w * self.seq_len, w * self.seq_len + self.seq_len + 1
        i = int(np.searchsorted(self._starts, start, side="right")) - 1
        parts = []
        while start < end:
            lo = start - int(self._starts[i])
            take = min(end - start, len(self._maps[i]) - lo)
            parts.append(self._maps[i][lo:lo + take])
            start += take
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            order = self._order(self.epoch)
            while self.batch < self.batches_per_epoch:
                idx = order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
                block = np.stack([self._window(int(w)) for w in idx]).astype(np.int64)
                self.batch += 1
                t = torch.from_numpy(block)
                yield t[:, :-1], t[:, 1:]
            self.epoch, self.batch = self.epoch + 1, 0
            if not self.loop:
                return

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "split": self.split,
                "batch_size": self.batch_size, "seq_len": self.seq_len, "rank": self.rank,
                "world_size": self.world_size, "shuffle": self.shuffle, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; the settings that decide the order must match this loader's."""
        for key in ("seed", "split", "batch_size", "seq_len", "rank", "world_size", "shuffle", "tokens"):
            if key in state and state[key] != getattr(self, key):
                raise GroundupError(f"data loader state has {key}={state[key]!r}, this loader has "
                                    f"{getattr(self, key)!r}; resume with the same data and settings")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
