"""Resuming pretraining continues the same loss curve: after `kill -9` mid-run, after a full disk
while saving, and only with the settings the checkpoint was written with."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundup.errors import GroundupError
from tests.test_train_pretrain import ROOT, losses, make_shards, shakespeare_text, tiny, train_records

STEPS, SAVE_EVERY = 30, 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("resume"), shakespeare_text(100_000))


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory) -> list[float]:
    """Per-step losses of the uninterrupted run."""
    from groundup.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("reference") / "run"
    pretrain(tiny(shards, out, steps=STEPS, save_every=SAVE_EVERY, sample_tokens=0, eval_tokens=1024))
    ls = losses(out)
    assert len(ls) == STEPS
    return ls


def cli() -> list[str]:
    """`groundup` once train.commands is registered in cli.py, else the module's own entry point."""
    from groundup.cli import COMMAND_MODULES

    mod = "groundup" if "groundup.train.commands" in COMMAND_MODULES else "groundup.train.commands"
    return [sys.executable, "-m", mod, "train", "pretrain"]


def test_kill_9_mid_run_then_resume_gives_the_same_loss_curve(shards: Path, reference: list[float],
                                                              tmp_path: Path) -> None:
    from groundup.train.pretrain import pretrain
    from groundup.train.state import checkpoint_steps

    out = tmp_path / "killed"
    args = [str(shards), "--out", str(out), "--layers", "2", "--dim", "64", "--heads", "2", "--seq-len", "64",
            "--batch-tokens", "1024", "--steps", str(STEPS), "--save-every", str(SAVE_EVERY),
            "--eval-tokens", "1024", "--sample-tokens", "0", "--threads", "1", "--dtype", "fp32",
            "--compile", "off", "--no-progress"]
    proc = subprocess.Popen(cli() + args, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    killed_after = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint_steps(out):
            killed_after = len(train_records(out))
            if killed_after >= 13:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert killed_after < STEPS
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.endswith(".partial"))
    resumed_from = int(ckpts[-1].split("-")[1])
    assert SAVE_EVERY <= resumed_from < STEPS

    res = pretrain(tiny(shards, out, steps=STEPS, save_every=SAVE_EVERY, sample_tokens=0, eval_tokens=1024))
    got = losses(out)
    assert [r["step"] for r in train_records(out)] == list(range(1, STEPS + 1))  # records past the checkpoint dropped
    assert got == reference  # exact: fp32 on CPU, one thread, same data position, optimizer state and RNG
    assert res["steps"] == STEPS
    # keep-last-K: the newest two checkpoints stay
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000025", "step-000030"]


def test_full_disk_while_saving_keeps_the_previous_checkpoint(shards: Path, reference: list[float], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    from groundup.models import load_model
    from groundup.train.pretrain import pretrain

    real_save = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if "step-000015" in str(filename) and "trainer" in str(filename):
            real_save(tensors, filename, metadata)  # the file is half there, as on a disk that fills up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real_save(tensors, filename, metadata)

    out = tmp_path / "disk"
    opts = tiny(shards, out, steps=STEPS, save_every=SAVE_EVERY, sample_tokens=0, eval_tokens=1024)
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    with pytest.raises(GroundupError, match=r"could not write checkpoint step 15 .*No space left on device\); "
                                            r"the previous checkpoint .*step-000010 is intact"):
        pretrain(opts)
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000005", "step-000010"]  # no partial
    model, _ = load_model(out / "checkpoints" / "step-000010", dtype="fp32", device="cpu")
    assert model.cfg.dim == 64
    pretrain(opts)  # space freed: resume from step 10
    assert losses(out) == reference


def test_resume_refuses_other_settings_and_restart_starts_over(shards: Path, tmp_path: Path) -> None:
    from groundup.train.pretrain import pretrain

    out = tmp_path / "run"
    pretrain(tiny(shards, out, steps=4, sample_tokens=0, eval_tokens=1024))
    with pytest.raises(GroundupError, match="was trained with seed=0, this run has 1"):
        pretrain(tiny(shards, out, steps=8, seed=1, sample_tokens=0, eval_tokens=1024))
    with pytest.raises(GroundupError, match="holds a run of a different model"):
        pretrain(tiny(shards, out, steps=8, dim=128, sample_tokens=0, eval_tokens=1024))
    with pytest.raises(GroundupError, match="holds no checkpoint"):
        pretrain(tiny(shards, tmp_path / "fresh", steps=4, resume="yes"))
    # a longer run continues from step 4; --restart discards it all
    pretrain(tiny(shards, out, steps=8, sample_tokens=0, eval_tokens=1024))
    assert [r["step"] for r in train_records(out)] == list(range(1, 9))
    pretrain(tiny(shards, out, steps=3, seed=1, resume="no", sample_tokens=0, eval_tokens=1024))
    assert [r["step"] for r in train_records(out)] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003"]
