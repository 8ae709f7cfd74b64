"""Data-parallel training across processes and machines: torchrun's environment, DDP and FSDP2.

Launched as `torchrun --nproc_per_node=N -m groundup train pretrain ...`, every process
calls `init_distributed()`, which reads the variables torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins the process group: NCCL when the process
has a CUDA device (one GPU per process: cuda:LOCAL_RANK), gloo on CPU. Run without
torchrun it returns a single-process `Dist` and touches nothing, so the same training
code runs both ways.

`wrap_model(model, dist)` returns the model for training:
- one process: the model itself;
- DDP (default): a replica per process; the backward pass all-reduces (averages)
  gradients, so every rank takes the same optimizer step and the replicas stay equal;
- FSDP2 (`fsdp=True`): `torch.distributed.fsdp.fully_shard` on each block, then on the
  root. Parameters, gradients and optimizer state are sharded by rows across ranks and
  each block's weights are all-gathered just for its forward/backward: for models whose
  weights + optimizer state do not fit one device. Muon handles the sharded (DTensor)
  matrices itself (see muon.py).

Each rank must read a different part of the data (rank r takes every world_size-th
micro-batch, or its own slice) and the global batch is micro_batch × grad_accum ×
world_size sequences. During gradient accumulation only the last micro-step needs the
all-reduce: wrap the others in `gradient_sync(model, False)`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from groundup.errors import GroundupError


@dataclass
class Dist:
    """Where this process sits: its rank among world_size processes, its device, and whether it is rank 0."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        """True when there is more than one process (a process group exists)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise GroundupError(f"environment variable {name}={v!r} is not an integer; launch with torchrun") from None


def init_distributed(*, device: str | None = None, timeout_s: float = 1800.0) -> Dist:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) or return a single-process Dist.

    device: "cpu" or "cuda" to force one; None = CUDA when available, else CPU.
    """
    import torch.distributed as td

    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise GroundupError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if world <= 1:
        dev = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        return Dist(rank=0, world_size=1, local_rank=0, device=dev, is_main=True)
    if not td.is_available():
        raise GroundupError("this torch build has no torch.distributed; run with one process")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise GroundupError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                                "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not td.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise GroundupError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun")
        td.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                              timeout=_dt.timedelta(seconds=timeout_s),
                              device_id=dev if use_cuda else None)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=dev, is_main=rank == 0)


def wrap_model(model: nn.Module, dist: Dist, *, fsdp: bool = False,
               param_dtype: torch.dtype | None = None) -> nn.Module:
    """DDP- or FSDP2-wrap `model` (already on dist.device) for training; unchanged with one process.

    param_dtype (FSDP2 only): compute in this dtype (e.g. torch.bfloat16) while the sharded
    master weights and the gradient reduction stay float32.
    """
    if not dist.distributed:
        return model
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(dist.device.type, (dist.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
        blocks = getattr(model, "layers", None)
        for block in blocks if blocks is not None else []:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The Transformer inside DDP / torch.compile wrappers (FSDP2 modifies the module in place)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(getattr(model, "module", None), nn.Module) and not hasattr(model, "cfg"):
            model = model.module  # type: ignore[assignment]
        else:
            return model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside, backward passes all-reduce gradients only if `enabled` (skip it on all but the last
    gradient-accumulation micro-step). A no-op for an unwrapped model."""
    if enabled:
        yield
        return
    if hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
        return
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
        return
    yield


def all_reduce_mean(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Average `t` over all ranks, in place (SUM then divide: gloo has no AVG); returns `t`."""
    if dist.distributed:
        import torch.distributed as td

        td.all_reduce(t, op=td.ReduceOp.SUM)
        t.div_(dist.world_size)
    return t


def barrier(dist: Dist) -> None:
    """Wait until every rank gets here."""
    if dist.distributed:
        import torch.distributed as td

        if dist.device.type == "cuda":
            td.barrier(device_ids=[dist.device.index])
        else:
            td.barrier()


def destroy(dist: Dist) -> None:
    """Leave the process group (call at the end of training, on every rank)."""
    if dist.distributed:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
