"""Training checkpoints: everything a resumed run needs to continue the same loss curve.

A training checkpoint is a directory `OUT/checkpoints/step-NNNNNN/` that is at the same time a
plain groundup checkpoint (`load_model` and `groundup chat` open it):

    config.json          the ModelConfig
    model.safetensors    the weights (float32 master copy)
    tokenizer.json       the tokenizer (+ tokenizer_config.json)
    meta.json            step, tokens seen, last metrics
    trainer.safetensors  optimizer state tensors and RNG states
    trainer.json         the rest: optimizer structure and hyper-parameters, schedule step, data
                         loader position, python/numpy RNG, the run's settings

Never pickle: nested Python structures go to JSON, their tensors to safetensors, each tensor in
the JSON replaced by {"tensor": key} (and dicts with non-string keys, tuples, by tagged forms).

Writes are atomic: the directory is written as `step-NNNNNN.partial`, its files fsynced, then
renamed into place; only then are older checkpoints beyond `keep` deleted. An OSError while
writing (a full disk) removes the partial directory and raises a one-line GroundupError; the
previous checkpoints are untouched.

`gather_state` / `restore_state` move the live model and optimizer state to and from the full
(unsharded) form a checkpoint holds (under FSDP2 through torch.distributed.checkpoint's
state-dict helpers, which every rank calls); `export_model` makes OUT/model from the final
checkpoint with hard links.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from groundup.config import ModelConfig
from groundup.errors import GroundupError

CKPT_DIR = "checkpoints"
STEP_RE = re.compile(r"^step-(\d{6,})$")
MODEL_DIR = "model"  # OUT/model: the final model, without the trainer state
TRAINER_JSON = "trainer.json"
TRAINER_TENSORS = "trainer.safetensors"
FORMAT = "groundup-train/1"
TAGS = {"tensor", "ndarray", "items", "tuple", "torch_dtype"}  # keys of the tagged JSON forms pack() writes


# ---- nested structures <-> JSON + tensors ------------------------------------------------------------
def pack(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """A JSON-able form of `obj`; its tensors are moved into `tensors` under keys starting with `prefix`."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"tensor": key}
    if isinstance(obj, np.ndarray):
        return {"ndarray": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not set(obj) & TAGS:
            return {k: pack(v, tensors, prefix) for k, v in obj.items()}
        return {"items": [[pack(k, tensors, prefix), pack(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [pack(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [pack(v, tensors, prefix) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.dtype):
        return {"torch_dtype": str(obj).removeprefix("torch.")}
    raise GroundupError(f"cannot save a {type(obj).__name__} in a training checkpoint")


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `pack`."""
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"tensor"}:
        return tensors[obj["tensor"]]
    if set(obj) == {"ndarray", "dtype"}:
        return np.asarray(obj["ndarray"], dtype=obj["dtype"])
    if set(obj) == {"items"}:
        return {unpack(k, tensors): unpack(v, tensors) for k, v in obj["items"]}
    if set(obj) == {"tuple"}:
        return tuple(unpack(v, tensors) for v in obj["tuple"])
    if set(obj) == {"torch_dtype"}:
        return getattr(torch, obj["torch_dtype"])
    return {k: unpack(v, tensors) for k, v in obj.items()}


# ---- RNG -------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python global RNG states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---- finding checkpoints -----------------------------------------------------------------------------
def checkpoint_steps(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, directory) of every complete training checkpoint under OUT/checkpoints, oldest first."""
    root = Path(out) / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_JSON).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    steps = checkpoint_steps(out)
    return steps[-1][1] if steps else None


# ---- saving ----------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_training_checkpoint(out: str | os.PathLike, step: int, cfg: ModelConfig,
                             model_state: dict[str, torch.Tensor], tokenizer: Any,
                             optimizer_states: list[dict[str, Any]], trainer: dict[str, Any],
                             meta: dict[str, Any], keep: int = 2) -> Path:
    """Write OUT/checkpoints/step-NNNNNN atomically; keep the newest `keep` checkpoints (0 = all)."""
    from safetensors.torch import save_file

    root = Path(out) / CKPT_DIR
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.partial"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        cfg.save(tmp / "config.json")
        weights = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        tensors: dict[str, torch.Tensor] = {}
        body = {"format": FORMAT, "step": step,
                "optimizers": [pack(s, tensors, f"opt{i}") for i, s in enumerate(optimizer_states)],
                "rng": pack(rng_state(), tensors, "rng"),
                **{k: pack(v, tensors, k) for k, v in trainer.items()}}
        save_file(tensors, str(tmp / TRAINER_TENSORS))
        (tmp / TRAINER_JSON).write_text(json.dumps(body) + "\n")
        for f in tmp.iterdir():
            _fsync_file(f)
        if final.exists():  # the same step saved twice (a resumed run's last step): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_file(root)
    except OSError as ex:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(out)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise GroundupError(f"could not write checkpoint step {step} in {root} ({ex.strerror or ex}); {kept}; "
                            "free disk space and run again to resume") from None
    if keep > 0:
        for _, old in checkpoint_steps(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partials(out: str | os.PathLike) -> None:
    """Delete `*.partial` directories an interrupted save left behind."""
    root = Path(out) / CKPT_DIR
    if root.is_dir():
        for p in root.glob("*.partial"):
            shutil.rmtree(p, ignore_errors=True)


# ---- loading ---------------------------------------------------------------------------------------
def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The trainer body of a checkpoint: "step", "optimizers", "rng", ... plus "model" (the weights)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        body = json.loads((path / TRAINER_JSON).read_text())
        tensors = load_file(str(path / TRAINER_TENSORS))
        weights = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as ex:
        raise GroundupError(f"{path} is not a readable training checkpoint ({ex}); delete it to start over "
                            "or resume from an older one") from None
    if body.get("format") != FORMAT:
        raise GroundupError(f"{path}/{TRAINER_JSON} has format {body.get('format')!r}, expected {FORMAT}")
    state = unpack(body, tensors)
    state["model"] = weights
    state["config"] = ModelConfig.load(path / "config.json")
    return state


# ---- gathering and restoring live state, exporting the model -------------------------------------------
def gather_state(model, optimizers, fsdp: bool) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Full (unsharded) model and optimizer state dicts; under FSDP every rank must call this."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, \
            get_optimizer_state_dict

        o = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=o), [get_optimizer_state_dict(model, optimizers, options=o)]
    from groundup.train.distributed import unwrap

    return unwrap(model).state_dict(), [opt.state_dict() for opt in optimizers]


def restore_state(model, optimizers, ckpt: dict[str, Any], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, \
            set_optimizer_state_dict

        o = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, ckpt["model"], options=o)
        set_optimizer_state_dict(model, optimizers, ckpt["optimizers"][0], options=o)
        return
    if len(ckpt["optimizers"]) != len(optimizers):
        raise GroundupError("the checkpoint's optimizers do not match this run's --optimizer; resume with the same one")
    for opt, st in zip(optimizers, ckpt["optimizers"]):
        opt.load_state_dict(st)


def export_model(out: Path, ckpt_dir: Path) -> Path:
    """OUT/model: the final checkpoint's model files (hard links, no copy), atomically replaced."""
    dest = out / MODEL_DIR
    tmp = out / (MODEL_DIR + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in ckpt_dir.iterdir():
        if f.name.startswith("trainer."):
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    old = out / (MODEL_DIR + ".old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
