"""`groundup train pretrain`: a tiny model really learns, is deterministic, evaluates bits/byte over
exact bytes, writes a chat-able model, and bad input gets one-line errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from groundup.errors import GroundupError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
ROOT = Path(__file__).resolve().parents[1]


def shakespeare_text(n_bytes: int = 150_000) -> str:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} is missing (see /work/shared/data/SOURCES.md)")
    return SHAKESPEARE.read_text(encoding="utf-8")[:n_bytes]


def make_shards(tmp: Path, text: str, tokenizer: str = "bytes", name: str = "shards") -> Path:
    """Shards of `text` (one document per paragraph, 10% held out) built by the data pipeline."""
    from groundup.data.pipeline import RunOptions, run_pipeline

    src = tmp / f"{name}.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp / name
    run_pipeline([str(src)], out, RunOptions(tokenizer=tokenizer, workers=1, val_fraction=0.1, dedup=False,
                                             text_mode="paragraph", filters="none"))
    return out


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("pretrain"), shakespeare_text())


def tiny(shards: Path, out: Path, **kw):
    """Options for a 2-layer, 64-wide model on 64-token windows, one CPU thread (stable timings)."""
    from groundup.train.pretrain import PretrainOptions

    base = dict(shards=str(shards), out=str(out), layers=2, dim=64, heads=2, seq_len=64, batch_tokens=1024,
                steps=30, eval_tokens=4096, sample_tokens=16, threads=1, progress=False, dtype="fp32",
                compile="off")
    base.update(kw)
    return PretrainOptions(**base)


def train_records(out: Path) -> list[dict]:
    from groundup.train.observe import read_metrics

    return [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in train_records(out)]


# ---- a real run -----------------------------------------------------------------------------------
def test_tiny_run_learns_and_leaves_a_chatable_model(shards: Path, tmp_path: Path) -> None:
    from groundup.config import ModelConfig
    from groundup.engine.engine import Engine
    from groundup.engine.sampling import SamplingParams
    from groundup.models import load_model
    from groundup.train.flops import flops_per_token
    from groundup.train.observe import read_metrics
    from groundup.train.pretrain import pretrain
    from groundup.train.schedule import lr_multiplier

    out = tmp_path / "run"
    res = pretrain(tiny(shards, out, steps=40, warmup=4, eval_every=20, sample_every=20, peak_flops=1e9))
    recs = train_records(out)
    model_cfg = ModelConfig.load(out / "model" / "config.json")
    assert [r["step"] for r in recs] == list(range(1, 41))
    first, last = recs[0]["loss"], sum(r["loss"] for r in recs[-5:]) / 5
    assert first > math.log(200) and last < first - 1.5, (first, last)  # from ~uniform over bytes to real learning
    for r in recs:  # the schedule really drives the lr: warmup, stable, then the wsd decay
        assert r["lr"] == pytest.approx(lr_multiplier(r["step"] - 1, 40, warmup=4, kind="wsd"))
        assert r["tok_per_s"] > 0 and r["mfu"] > 0
        assert r["mfu_user"] == pytest.approx(flops_per_token(model_cfg, 64) * r["tok_per_s"] / 1e9)
    vals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "val"]
    assert [v["step"] for v in vals] == [20, 40] and vals[1]["val_bpb"] < vals[0]["val_bpb"] < 8.0
    # bytes tokenizer: every non-BOS target is one byte, so bits/byte is its loss in bits
    assert res["val_bpb"] == pytest.approx(vals[1]["val_bpb"]) and res["val_loss"] == vals[1]["val_loss"]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(res["model"]) == out / "model"
    # the exported model is a plain groundup checkpoint: load_model + the engine + a chat prompt
    model, tok = load_model(out / "model", dtype="fp32", device="cpu")
    assert model.cfg.n_layers == 2 and tok.vocab_size == 257
    assert tok.decode(tok.encode("ROMEO:\n")) == "ROMEO:\n"
    text = Engine(model, tok).generate_text(tok.encode_chat([{"role": "user", "content": "hi"}]),
                                            SamplingParams(max_tokens=8, temperature=0.0))
    assert isinstance(text, str)
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["step"] == 40 and meta["val_bpb"] == pytest.approx(res["val_bpb"])


def test_same_seed_same_loss_curve_other_seed_differs(shards: Path, tmp_path: Path) -> None:
    from groundup.train.pretrain import pretrain

    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        pretrain(tiny(shards, tmp_path / name, steps=8, seed=seed, sample_tokens=0, eval_tokens=1024))
        runs[name] = losses(tmp_path / name)
    assert runs["a"] == runs["b"]  # bit for bit
    assert runs["a"] != runs["c"]


def test_gradient_accumulation_matches_one_big_batch(shards: Path, tmp_path: Path) -> None:
    from groundup.train.pretrain import pretrain

    pretrain(tiny(shards, tmp_path / "one", steps=6, micro_batch=16, sample_tokens=0, eval_tokens=1024))
    pretrain(tiny(shards, tmp_path / "four", steps=6, micro_batch=4, sample_tokens=0, eval_tokens=1024))
    one, four = losses(tmp_path / "one"), losses(tmp_path / "four")
    assert one[0] == pytest.approx(four[0], abs=1e-5)  # same batch, same weights: the mean over 4 micro-batches
    assert one == pytest.approx(four, abs=2e-3)  # then only float summation order differs


def test_adamw_and_cosine_run(shards: Path, tmp_path: Path) -> None:
    from groundup.train.pretrain import pretrain

    pretrain(tiny(shards, tmp_path / "adamw", steps=12, optimizer="adamw", schedule="cosine", warmup=2,
                  matrix_lr=3e-3, sample_tokens=0, eval_tokens=1024))
    ls = losses(tmp_path / "adamw")
    assert len(ls) == 12 and ls[-1] < ls[0] - 0.5


def test_bf16_autocast_and_config_file_run(shards: Path, tmp_path: Path) -> None:
    from groundup.config import ModelConfig
    from groundup.train.pretrain import pretrain

    cfg = ModelConfig(vocab_size=257, dim=64, n_layers=1, n_heads=2, mlp_hidden=128, activation="swiglu",
                      context_length=64, tied_embeddings=False, name="swiglu")
    cfg.save(tmp_path / "cfg.json")
    common = dict(layers=None, dim=None, heads=None, config=str(tmp_path / "cfg.json"), steps=4, sample_tokens=0,
                  eval_tokens=1024)
    pretrain(tiny(shards, tmp_path / "fp32", **common))
    pretrain(tiny(shards, tmp_path / "bf16", dtype="bf16", **common))
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert bf16 != fp32 and bf16[0] == pytest.approx(fp32[0], abs=0.02)  # bf16 matmuls, close to fp32
    assert all(math.isfinite(v) for v in bf16) and bf16[-1] < bf16[0]
    assert ModelConfig.load(tmp_path / "bf16" / "model" / "config.json") == cfg


def test_bpe_shards_train_and_the_saved_tokenizer_encodes_the_same(tmp_path: Path) -> None:
    from groundup.models import load_model
    from groundup.tokenizer import bpe
    from groundup.train.pretrain import pretrain

    text = shakespeare_text(60_000)
    trained = bpe.train([text], 400, special_tokens=["<|bos|>"])
    tok_file = trained.save(tmp_path / "tok.json")
    shards = make_shards(tmp_path, text, tokenizer=str(tok_file), name="bpe-shards")
    res = pretrain(tiny(shards, tmp_path / "run", steps=3, sample_tokens=4, eval_tokens=1024))  # tokenizer from run.json
    model, tok = load_model(res["model"], dtype="fp32", device="cpu")
    assert model.cfg.vocab_size == tok.vocab_size == trained.vocab_size
    sample = text[-3000:]
    assert tok.encode(sample, add_bos=False) == trained.encode(sample) and tok.bos_id == trained.bos_id
    assert tok.decode(trained.encode(sample)) == sample


# ---- bits per byte ---------------------------------------------------------------------------------
def test_bits_per_byte_counts_the_exact_bytes_of_the_text(tmp_path: Path) -> None:
    from groundup.config import ModelConfig
    from groundup.model import Transformer
    from groundup.tokenizer import bpe
    from groundup.train.evaluate import evaluate_text, token_byte_lengths
    from groundup.train.plan import engine_tokenizer

    text = shakespeare_text(60_000)
    trained = bpe.train([text[:50_000]], 400, special_tokens=["<|bos|>"])
    tok = engine_tokenizer(trained, "bpe-400")
    held = text[50_000:52_000] + " déjà vu ✓"  # multi-byte characters count as their UTF-8 bytes
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2, mlp_hidden=64,
                                    context_length=128))
    model.init_weights(1)
    r = evaluate_text(model, tok, held, seq_len=128, batch_size=3)
    # the same sum, token by token, with full-length context windows computed independently
    ids = [tok.bos_id, *tok.encode(held, add_bos=False)]
    nll = 0.0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, 128):
            chunk = torch.tensor([ids[s:s + 129]])
            logp = torch.log_softmax(model(chunk[:, :-1]).double(), -1)
            nll -= float(logp[0].gather(-1, chunk[0, 1:, None]).sum())
    n_bytes = len(held.encode("utf-8"))
    assert r["bytes"] == n_bytes and r["tokens"] == len(ids) - 1
    assert r["bpb"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    lengths = token_byte_lengths(tok, tok.vocab_size)
    assert int(lengths[tok.bos_id]) == 0 and int(lengths[ids[1:]].sum()) == n_bytes


# ---- bad input --------------------------------------------------------------------------------------
def test_missing_shards_or_manifest(tmp_path: Path) -> None:
    from groundup.train.pretrain import pretrain

    with pytest.raises(GroundupError, match="does not exist; build one with `groundup data run"):
        pretrain(tiny(tmp_path / "nope", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GroundupError, match="has no manifest.json"):
        pretrain(tiny(tmp_path / "empty", tmp_path / "out"))


def test_tokenizer_and_vocab_mismatch(shards: Path, tmp_path: Path) -> None:
    from groundup.config import ModelConfig
    from groundup.tokenizer import bpe
    from groundup.train.pretrain import pretrain

    other = bpe.train([shakespeare_text(20_000)], 300, special_tokens=["<|bos|>"])
    other.save(tmp_path / "other.json")
    with pytest.raises(GroundupError, match="is not the one the shards .* were made with"):
        pretrain(tiny(shards, tmp_path / "o1", tokenizer=str(tmp_path / "other.json")))
    ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=2, mlp_hidden=128, context_length=64).save(
        tmp_path / "cfg.json")
    with pytest.raises(GroundupError, match="vocab_size 300 but the shards' tokenizer has 257 tokens"):
        pretrain(tiny(shards, tmp_path / "o2", layers=None, dim=None, heads=None, config=str(tmp_path / "cfg.json")))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_model_too_big_for_memory_is_refused_before_allocating(shards: Path, tmp_path: Path) -> None:
    import psutil

    from groundup.train.pretrain import pretrain

    rss = psutil.Process().memory_info().rss
    with pytest.raises(GroundupError, match=r"needs about [\d.]+ GiB .* GiB free; use a smaller model"):
        pretrain(tiny(shards, tmp_path / "big", layers=48, dim=16384, heads=128))  # ~155B parameters
    assert psutil.Process().memory_info().rss < rss + (256 << 20)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shards: Path, tmp_path: Path) -> None:
    from groundup.models import load_model
    from groundup.train.pretrain import pretrain

    out = tmp_path / "nan"
    opts = tiny(shards, out, steps=20, save_every=1, keep=0, optimizer="adamw", matrix_lr=1e30, embed_lr=1e30,
                scalar_lr=1e30, head_lr=1e30, grad_clip=0.0, warmup=0, sample_tokens=0)
    with pytest.raises(GroundupError) as ei:
        pretrain(opts)
    msg = str(ei.value)
    step = int(msg.split(" at step ")[1].split(";")[0])
    assert 1 < step <= 20 and ("became nan" in msg or "became inf" in msg)
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == [f"step-{s:06d}" for s in range(1, step)]  # nothing written for the bad step
    assert f"step-{step - 1:06d}" in msg
    load_model(out / "checkpoints" / saved[-1], dtype="fp32", device="cpu")
    assert train_records(out)[-1]["step"] == step - 1


def test_cli_prints_one_line_errors(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "groundup.train.commands", "train", "pretrain", str(tmp_path / "none"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: shards directory")


def test_plan_rejects_bad_batch_geometry() -> None:
    from groundup.train.plan import batch_plan

    bp = batch_plan(4096, 64, 1, None, 1024)
    assert (bp.micro_batch, bp.accum, bp.batch_tokens) == (16, 4, 4096)
    assert batch_plan(4096, 64, 2, 8, 1024).accum == 4
    with pytest.raises(GroundupError, match="not a multiple of seq_len x ranks"):
        batch_plan(1000, 64, 1, None, 1024)
    with pytest.raises(GroundupError, match="does not divide"):
        batch_plan(4096, 64, 1, 5, 1024)


def test_default_micro_batch_shrinks_to_fit_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from groundup.train import plan

    cfg = plan.model_plan(257, 256, depth=4).config
    bp = plan.batch_plan(32 * 256, 256, 1, None, 1 << 20)
    assert (bp.micro_batch, bp.accum) == (32, 1)
    need8 = sum(plan.estimate_memory(cfg, 8 * 256, "muon", 4).values())
    need16 = sum(plan.estimate_memory(cfg, 16 * 256, "muon", 4).values())
    assert need8 < need16  # activations grow with the micro-batch; the rest does not
    monkeypatch.setattr(plan, "free_memory", lambda device: int((need8 + need16) / 2 / plan.MEMORY_HEADROOM))
    fitted = plan.fit_micro_batch(bp, cfg, "muon", 4, torch.device("cpu"))
    assert (fitted.micro_batch, fitted.accum, fitted.batch_tokens) == (8, 4, bp.batch_tokens)
    with pytest.raises(GroundupError, match="micro-batches of 4,096 tokens"):
        plan.check_memory(cfg, 16 * 256, "muon", 4, torch.device("cpu"))
