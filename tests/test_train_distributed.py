"""Distributed pretraining on CPU: 2 processes (torchrun, gloo) follow the 1-process loss curve.

The runs go through the real command, `python -m torch.distributed.run --standalone
--nproc_per_node=2 -m groundup train pretrain ...`, at the same global batch (16 sequences of
64 tokens per step): one process accumulates 4 micro-batches of 4 sequences, each of the two
ranks accumulates 2, so DDP's averaged gradient is the same gradient. Tolerance: per step
|loss_2proc - loss_1proc| <= 1e-4 + 1e-4·loss. Float32 sums in a different order (per-rank
partial sums, then the all-reduce) make the two runs differ in the last bits only (measured:
4.8e-7 at most over 8 steps). The runs' recorded settings confirm there really were two ranks.

FSDP2 (`--fsdp`): parameters, gradients and Muon's momentum sharded over the two ranks; it
trains (the loss falls) and, being the same mathematics, follows the same curve.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
RUN_ARGS = ["--layers", "2", "--dim", "64", "--heads", "2", "--seq-len", "64", "--batch-tokens", "1024",
            "--micro-batch", "4", "--steps", str(STEPS), "--warmup", "2", "--eval-tokens", "2048",
            "--threads", "1", "--dtype", "fp32", "--compile", "off", "--no-progress", "--device", "cpu"]
ABS_TOL, REL_TOL = 1e-4, 1e-4
WORDS = ("the king and queen of a small town went to see where river runs past old stone walls while "
         "children sang songs about bread wine rain summer night light sea ships").split()


def synthetic_text(n_paragraphs: int = 400, seed: int = 0) -> str:
    """Deterministic word salad in paragraphs: no shared data needed, enough structure to learn from."""
    rng = random.Random(seed)
    paras = []
    for _ in range(n_paragraphs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                     for _ in range(rng.randint(1, 4))]
        paras.append(" ".join(sentences))
    return "\n\n".join(paras) + "\n"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from groundup.data.pipeline import RunOptions, run_pipeline

    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "text.txt"
    src.write_text(synthetic_text(), encoding="utf-8")
    run_pipeline([str(src)], tmp / "shards", RunOptions(tokenizer="bytes", workers=1, val_fraction=0.1, dedup=False,
                                                        text_mode="paragraph", filters="none"))
    return tmp / "shards"


def entry_module() -> str:
    """`groundup` once cli.py lists the train commands; until then the commands module itself,
    which runs the same handler (`python -m groundup.train.commands train pretrain ...`)."""
    from groundup.cli import COMMAND_MODULES

    return "groundup" if "groundup.train.commands" in COMMAND_MODULES else "groundup.train.commands"


def run_in_process(args: list[str]) -> None:
    """The single-process reference, run through the same argument parser and handler."""
    from groundup.train.commands import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    ns = parser.parse_args(args)
    assert not ns.func(ns)


def start_torchrun(args: list[str], nproc: int = 2) -> tuple[list[str], subprocess.Popen]:
    """Launch `torchrun --standalone` (a free rendezvous port, so runs may overlap) without waiting."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", entry_module(), *args]
    return cmd, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(cmd: list[str], proc: subprocess.Popen) -> None:
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{output[-4000:]}"


def train_losses(out: Path) -> list[float]:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in recs if r.get("kind") == "train"]


def run_settings(out: Path) -> dict:
    """The settings the run recorded in its final checkpoint (world size, accumulation, ...)."""
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    assert ckpts, f"no checkpoint in {out}"
    return json.loads((ckpts[-1] / "trainer.json").read_text())["settings"]


def assert_same_curve(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want) == STEPS
    for step, (a, b) in enumerate(zip(got, want), 1):
        assert abs(a - b) <= ABS_TOL + REL_TOL * abs(b), f"step {step}: {a} vs {b}\n{got}\n{want}"


@pytest.fixture(scope="module")
def runs(shards: Path, tmp_path_factory) -> dict[str, Path]:
    """The three runs, overlapped to save wall time: the 2-process DDP and FSDP2 launches start first,
    then the 1-process reference runs here (one thread) while they work."""
    from groundup.train.flops import peak_key

    tmp = tmp_path_factory.mktemp("runs")
    # a private cache holding a made-up 1-thread fp32 peak: MFU is not under test here, and this
    # spares five matmul-peak measurements and keeps the user's ~/.cache/groundup untouched
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    key = peak_key(torch.float32, "cpu")
    torch.set_num_threads(threads)
    (tmp / "cache").mkdir()
    (tmp / "cache" / "peak.json").write_text(json.dumps({key: {"flops": 1e11, "n": 0}}))
    base = ["train", "pretrain", str(shards)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GROUNDUP_CACHE", str(tmp / "cache"))
        launches = {"ddp": start_torchrun([*base, "--out", str(tmp / "ddp"), *RUN_ARGS]),
                    "fsdp": start_torchrun([*base, "--out", str(tmp / "fsdp"), "--fsdp", *RUN_ARGS])}
        try:
            run_in_process([*base, "--out", str(tmp / "one"), *RUN_ARGS])
        finally:
            for cmd, proc in launches.values():
                finish(cmd, proc)
    return {"one": tmp / "one", "ddp": tmp / "ddp", "fsdp": tmp / "fsdp"}


def test_reference_run_learns(runs) -> None:
    settings = run_settings(runs["one"])
    assert settings["world_size"] == 1 and settings["accum"] == 4
    ref = train_losses(runs["one"])
    assert len(ref) == STEPS and ref[-1] < ref[0] - 1.0  # it learns, so the comparisons below mean something


def test_ddp_two_processes_follow_the_one_process_curve(runs) -> None:
    from safetensors.torch import load_file

    settings = run_settings(runs["ddp"])
    assert settings["world_size"] == 2 and settings["accum"] == 2  # really two ranks, same global batch
    assert_same_curve(train_losses(runs["ddp"]), train_losses(runs["one"]))
    a = load_file(str(runs["ddp"] / "model" / "model.safetensors"))
    b = load_file(str(runs["one"] / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-3, worst


def test_fsdp2_two_processes_train(runs) -> None:
    assert run_settings(runs["fsdp"])["world_size"] == 2
    got = train_losses(runs["fsdp"])
    assert got[-1] < got[0] - 1.0, got  # it trains
    assert_same_curve(got, train_losses(runs["one"]))  # sharding changed where the numbers live, not them
    assert (runs["fsdp"] / "model" / "model.safetensors").is_file()  # the gathered, unsharded model


def test_single_process_dist_without_torchrun(monkeypatch) -> None:
    from groundup.train.distributed import all_reduce_mean, barrier, destroy, init_distributed, wrap_model

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    dist = init_distributed(device="cpu")
    assert (dist.rank, dist.world_size, dist.local_rank, dist.is_main, dist.distributed) == (0, 1, 0, True, False)
    assert dist.device == torch.device("cpu")
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, dist) is model and wrap_model(model, dist, fsdp=True) is model
    t = torch.tensor([3.0])
    assert all_reduce_mean(t, dist) is t and t.item() == 3.0
    barrier(dist)
    destroy(dist)
    assert not torch.distributed.is_initialized()


def test_torchrun_env_without_rendezvous_is_a_clear_error(monkeypatch) -> None:
    from groundup.errors import GroundupError
    from groundup.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(GroundupError, match="MASTER_ADDR"):
        init_distributed(device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(GroundupError, match="WORLD_SIZE"):
        init_distributed(device="cpu")
