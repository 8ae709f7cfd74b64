"""groundup checkpoints: config.json + model.safetensors + tokenizer files + meta.json.

Never pickle. Writes are atomic: everything goes into `<dir>.partial`, then one
rename replaces the old directory, so an interrupted save never leaves a
half-written checkpoint behind.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from groundup.config import ModelConfig
from groundup.errors import GroundupError


def save_checkpoint(out: str | Path, model, tokenizer=None, meta: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.cfg.save(tmp / "config.json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save(tmp)
    (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2))
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def load_checkpoint(path: str | Path, dtype: torch.dtype, device: torch.device):
    from safetensors import safe_open

    from groundup.models import build_from_state
    from groundup.tokenizer.tokenizer import Tokenizer

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise GroundupError(f"{path}: not a groundup checkpoint (no model.safetensors)")
    cfg = ModelConfig.load(path / "config.json")

    def items():
        with safe_open(str(weights), framework="pt") as st:
            for name in st.keys():
                t = st.get_tensor(name)
                yield name, (t.float() if "norm" in name else t.to(dtype))

    model = build_from_state(cfg, items(), device, str(path))
    tok = Tokenizer.load(path) if any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")) else None
    return model, tok


def read_meta(path: str | Path) -> dict[str, Any]:
    p = Path(path) / "meta.json"
    return json.loads(p.read_text()) if p.exists() else {}
