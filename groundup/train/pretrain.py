"""The pretraining loop: token shards in, a base model (a document generator) out.

`pretrain(PretrainOptions(shards=..., out=...))` does, in order:

1. plan (plan.py): the shards' tokenizer (checked against the manifest), the model config
   (`depth`, explicit sizes or a config file), batch geometry, a memory estimate checked
   against free memory before anything large is allocated;
2. resume: when OUT/checkpoints holds a checkpoint (or `resume="yes"`), the model, optimizers,
   schedule step, RNGs and data position come from the newest one, so the run continues the
   same loss curve; `resume="no"` starts over and discards OUT's old checkpoints and metrics;
3. the loop: per optimizer step, `accum` micro-batches forward/backward (bf16 autocast when the
   device does bf16 fast; DDP's gradient all-reduce only on the last micro-step), gradient
   clipping, the schedule's lr, the optimizers' step. One host sync per step (the loss value,
   also the NaN/inf check); nothing else leaves the device except at log/eval time;
4. every `eval_every` steps the validation loss and bits/byte, every `sample_every` a sample,
   every `save_every` an atomic checkpoint (state.py); at the end all three, OUT/model (the
   model to chat with: `groundup chat --model OUT/model`) and OUT/loss.png.

Under torchrun every rank runs this; only rank 0 prints, writes metrics and saves.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groundup.errors import GroundupError

LOSS_PNG = "loss.png"
# settings a resumed run must share with the checkpoint (else the data order or the model differ)
RESUME_KEYS = ("seed", "seq_len", "micro_batch", "accum", "world_size", "optimizer", "fsdp")


@dataclass
class PretrainOptions:
    shards: str
    out: str
    # model: --depth, or explicit sizes, or a config file
    depth: int | None = None
    layers: int | None = None
    dim: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    mlp_hidden: int | None = None
    activation: str | None = None
    config: str | None = None
    tokenizer: str | None = None  # default: the one `groundup data run` used
    # batch and length of the run
    seq_len: int = 512
    batch_tokens: int | None = None  # default: the depth dial's
    micro_batch: int | None = None  # sequences per forward per rank
    steps: int | None = None  # default: 20 tokens per parameter (Chinchilla)
    # optimizer and schedule
    optimizer: str = "muon"  # muon | adamw
    matrix_lr: float | None = None
    embed_lr: float | None = None
    scalar_lr: float | None = None
    head_lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "wsd"  # cosine | wsd | constant
    warmup: int | None = None  # default: 2% of the steps
    cooldown: float = 0.2
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    # speed and precision
    dtype: str = "auto"  # auto | bf16 | fp32
    compile: str = "auto"  # auto | on | off
    device: str | None = None
    threads: int | None = None
    fsdp: bool = False
    seed: int = 0
    # checkpoints
    save_every: int = 0  # 0 = only at the end
    keep: int = 2
    resume: str = "auto"  # auto | yes | no
    # observability
    log_every: int = 1
    eval_every: int = 0  # 0 = only at the end
    eval_tokens: int = 1 << 19
    sample_every: int = 0
    sample_tokens: int = 48
    sample_prompt: str = ""
    peak_flops: float | None = None  # a user-given peak for a second MFU figure
    progress: bool = True


def _dtype(opts: PretrainOptions, device: torch.device) -> torch.dtype:
    if opts.dtype == "bf16":
        return torch.bfloat16
    if opts.dtype == "fp32":
        return torch.float32
    if opts.dtype != "auto":
        raise GroundupError(f"unknown --dtype {opts.dtype!r}; use auto, bf16 or fp32")
    from groundup.train.flops import fast_dtype

    return fast_dtype(device)


def _use_compile(opts: PretrainOptions, device: torch.device) -> bool:
    if opts.compile not in ("auto", "on", "off"):
        raise GroundupError(f"unknown --compile {opts.compile!r}; use auto, on or off")
    if opts.compile == "auto":  # measured: see docs/pretraining.md ("torch.compile")
        return device.type == "cuda"
    return opts.compile == "on"


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def pretrain(opts: PretrainOptions) -> dict[str, Any]:
    """Run (or resume) pretraining; returns a summary (final losses, paths, timings). See the module docstring."""
    from groundup.data.loader import DataLoader
    from groundup.data.shards import read_manifest
    from groundup.model import Transformer
    from groundup.train import plan as P
    from groundup.train import state as S
    from groundup.train.distributed import all_reduce_mean, barrier, destroy, gradient_sync, init_distributed, \
        wrap_model
    # imported here, at call time: bench/pretrain.py times evaluate_split by replacing it in its module
    from groundup.train.evaluate import evaluate_split, sample_text, token_byte_lengths
    from groundup.train.flops import flops_per_token, matmul_peak
    from groundup.train.observe import METRICS, Observer, plot_losses, truncate_metrics
    from groundup.train.optimizers import build_optimizers, set_lr
    from groundup.train.schedule import lr_multiplier

    shards, out = Path(opts.shards), Path(opts.out)
    if not shards.is_dir():
        raise GroundupError(f"shards directory {shards} does not exist; build one with "
                            f"`groundup data run TEXT_FILES --out {shards}`")
    manifest = read_manifest(shards)
    if opts.optimizer not in ("muon", "adamw"):
        raise GroundupError(f"unknown --optimizer {opts.optimizer!r}; use muon or adamw")
    if opts.resume not in ("auto", "yes", "no"):
        raise GroundupError(f"unknown resume mode {opts.resume!r}; use auto, yes or no")
    if opts.seq_len < 1:
        raise GroundupError(f"--seq-len must be positive, got {opts.seq_len}")
    threads_before = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    dist = init_distributed(device=opts.device)
    try:
        tokenizer, tok_spec = P.resolve_tokenizer(shards, manifest, opts.tokenizer)
        mp = P.model_plan(tokenizer.vocab_size, opts.seq_len, depth=opts.depth, config=opts.config,
                          layers=opts.layers, dim=opts.dim, heads=opts.heads, kv_heads=opts.kv_heads,
                          mlp_hidden=opts.mlp_hidden, activation=opts.activation)
        cfg = mp.config
        device = dist.device
        dtype = _dtype(opts, device)
        micro_cap = P.GPU_MICRO_TOKENS if device.type == "cuda" else P.CPU_MICRO_TOKENS
        bp = P.batch_plan(opts.batch_tokens or mp.batch_tokens, opts.seq_len, dist.world_size, opts.micro_batch,
                          micro_cap)
        mem = dict(optimizer=opts.optimizer, act_bytes=2 if dtype == torch.bfloat16 else 4, device=device,
                   shards=dist.world_size if opts.fsdp else 1,
                   ranks_per_device=int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1)
        if opts.micro_batch is None:  # the default micro-batch shrinks until it fits; a given one is kept
            bp = P.fit_micro_batch(bp, cfg, **mem)
        P.check_memory(cfg, bp.micro_batch * bp.seq_len, **mem)
        from groundup.card import count_params

        n_params = count_params(cfg)
        total = opts.steps or max(1, math.ceil(20 * n_params / bp.batch_tokens))
        warmup = opts.warmup if opts.warmup is not None else total // 50
        matrix_lr = opts.matrix_lr if opts.matrix_lr is not None else (mp.matrix_lr if opts.optimizer == "muon"
                                                                       else 3e-3)
        run_settings = {"seed": opts.seed, "seq_len": bp.seq_len, "micro_batch": bp.micro_batch, "accum": bp.accum,
                        "world_size": dist.world_size, "optimizer": opts.optimizer, "fsdp": opts.fsdp,
                        "batch_tokens": bp.batch_tokens,
                        "steps": total, "warmup": warmup, "schedule": opts.schedule, "dtype": str(dtype),
                        "tokenizer": tok_spec, "shards": str(shards.resolve())}

        # resume or start over
        ckpt_path = None
        if opts.resume == "no":
            if dist.is_main:
                shutil.rmtree(out / S.CKPT_DIR, ignore_errors=True)
                (out / METRICS).unlink(missing_ok=True)
            barrier(dist)
        else:
            ckpt_path = S.latest_checkpoint(out)
            if ckpt_path is None and opts.resume == "yes":
                raise GroundupError(f"--resume: {out} holds no checkpoint to resume from")
        ckpt = S.load_training_checkpoint(ckpt_path) if ckpt_path is not None else None
        if ckpt is not None:
            if ckpt["config"].to_dict() != cfg.to_dict():
                raise GroundupError(f"{out} holds a run of a different model ({ckpt['config'].name or 'other shape'}); "
                                    "use another --out, or --restart to discard it")
            saved = ckpt["settings"]
            if (opts.micro_batch is None and saved.get("micro_batch") != bp.micro_batch
                    and saved.get("micro_batch", 0) * saved.get("accum", 0) == bp.micro_batch * bp.accum):
                # the default micro-batch depends on free memory: keep the one the run started with
                bp = P.BatchPlan(bp.seq_len, saved["micro_batch"], saved["accum"], bp.world_size)
                P.check_memory(cfg, bp.micro_batch * bp.seq_len, **mem)
                run_settings.update(micro_batch=bp.micro_batch, accum=bp.accum)
            for key in RESUME_KEYS:
                if ckpt["settings"].get(key) != run_settings[key]:
                    raise GroundupError(f"{out} was trained with {key}={ckpt['settings'].get(key)!r}, this run has "
                                        f"{run_settings[key]!r}; resume with the same settings or use --restart")
        out.mkdir(parents=True, exist_ok=True)
        if dist.is_main:
            S.remove_partials(out)

        # model, optimizers
        torch.manual_seed(opts.seed)
        model = Transformer(cfg)
        if ckpt is None:
            model.init_weights(opts.seed)
        elif not opts.fsdp:
            model.load_state_dict(ckpt["model"])
        model.to(device)
        model.train()
        wrapped = wrap_model(model, dist, fsdp=opts.fsdp,
                             param_dtype=dtype if opts.fsdp and dtype != torch.float32 else None)
        optimizers = build_optimizers(wrapped, kind=opts.optimizer, matrix_lr=matrix_lr,
                                      embed_lr=opts.embed_lr if opts.embed_lr is not None else mp.embed_lr,
                                      scalar_lr=opts.scalar_lr if opts.scalar_lr is not None else mp.scalar_lr,
                                      head_lr=opts.head_lr if opts.head_lr is not None else mp.head_lr,
                                      weight_decay=opts.weight_decay)
        loader = DataLoader(shards, bp.micro_batch, bp.seq_len, split="train", seed=opts.seed, rank=dist.rank,
                            world_size=dist.world_size)
        start = 0
        clock = {"train": 0.0}  # seconds spent in training steps (not evaluating, sampling or saving), all runs
        if ckpt is not None:
            S.restore_state(wrapped, optimizers, ckpt, opts.fsdp)
            loader.load_state_dict({**ckpt["loader"], "rank": dist.rank})
            S.set_rng_state(ckpt["rng"])
            start = int(ckpt["step"])
            clock["train"] = float(ckpt.get("train_seconds", 0.0))
            if start > total:
                raise GroundupError(f"{out} is already at step {start}, past --steps {total}; raise --steps to "
                                    "train on, or --restart")
        if dist.is_main:  # records past the checkpoint (or all, starting afresh) belong to a lost run
            truncate_metrics(out / METRICS, start)
        del ckpt
        val_loader = _val_loader(shards, manifest, bp, dist)
        fwd = torch.compile(wrapped, dynamic=False) if _use_compile(opts, device) else wrapped
        autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 and not opts.fsdp
                    else nullcontext())
        token_bytes = token_byte_lengths(tokenizer, cfg.vocab_size)
        params = [p for p in wrapped.parameters() if p.requires_grad]

        # observability
        fpt = flops_per_token(cfg, bp.seq_len)
        peak = matmul_peak(dtype, device)
        obs = Observer(out, total, start, enabled=dist.is_main, progress=opts.progress)
        obs.note(f"{cfg.name or 'model'}: {n_params:,} parameters, {cfg.n_layers} layers x {cfg.dim} wide; "
                 f"{bp.batch_tokens:,} tokens/step = {bp.micro_batch} x {bp.seq_len} x {bp.world_size} rank(s) x "
                 f"{bp.accum} micro-step(s); {total} steps; {opts.optimizer}; {str(dtype).removeprefix('torch.')}"
                 + (f"; resuming from {ckpt_path.name}" if ckpt_path is not None else "")
                 + ("; no validation split big enough for one batch: no val loss or bits/byte"
                    if val_loader is None else ""))
        reduce_sum = (lambda t: all_reduce_mean(t, dist).mul_(dist.world_size)) if dist.distributed else None
        last = {"step": start, "loss": math.nan, "checkpoint": str(ckpt_path) if ckpt_path else None}

        def evaluate(step: int) -> None:
            if val_loader is None:
                return
            val_loader.epoch, val_loader.batch = 0, 0
            wrapped.eval()
            r = evaluate_split(fwd, iter(val_loader), token_bytes, device, autocast,
                               max_batches=max(1, opts.eval_tokens // (bp.micro_batch * bp.seq_len * bp.world_size)),
                               reduce=reduce_sum)
            wrapped.train()
            last.update(r)
            obs.validation({"step": step, **r})

        def sample(step: int) -> None:
            text = sample_text(wrapped, tokenizer, opts.sample_prompt, opts.sample_tokens, seed=opts.seed + step,
                               context=cfg.context_length, autocast=autocast)
            obs.sample(step, text)

        def save(step: int) -> Path:
            model_state, optim_states = S.gather_state(wrapped, optimizers, opts.fsdp)
            path = None
            if dist.is_main:
                meta = {"step": step, "tokens": step * bp.batch_tokens, "train_loss": last.get("loss"),
                        "val_loss": last.get("val_loss"), "val_bpb": last.get("val_bpb"), "shards": str(shards),
                        "tokenizer": tok_spec}
                path = S.save_training_checkpoint(
                    out, step, cfg, model_state, tokenizer, optim_states,
                    {"settings": run_settings, "loader": loader.state_dict(), "options": asdict(opts),
                     "train_seconds": clock["train"]},
                    meta, keep=opts.keep)
                last["checkpoint"] = str(path)
            barrier(dist)
            return path or S.CKPT_DIR

        # the loop
        it = iter(loader)
        print_every = max(opts.log_every, 10, total // 50)  # log lines when there is no progress bar
        tokens_since, t_mark = 0, time.perf_counter()
        step = start
        try:
            for step in range(start + 1, total + 1):
                lr_mult = lr_multiplier(step - 1, total, warmup=warmup, kind=opts.schedule, cooldown=opts.cooldown,
                                        min_ratio=opts.min_lr_ratio)
                set_lr(optimizers, lr_mult)
                loss_sum = torch.zeros((), device=device)
                for micro in range(bp.accum):
                    x, y = next(it)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with gradient_sync(wrapped, micro == bp.accum - 1):
                        with autocast:
                            loss = _loss(fwd(x), y)
                        (loss / bp.accum).backward()
                    loss_sum += loss.detach()
                norm = (torch.nn.utils.clip_grad_norm_(params, opts.grad_clip) if opts.grad_clip > 0
                        else torch.zeros((), device=device))
                if hasattr(norm, "full_tensor"):
                    norm = norm.full_tensor()
                stats = torch.stack([loss_sum / bp.accum, norm.float()])
                all_reduce_mean(stats, dist)
                loss_val, norm_val = stats.tolist()  # the step's one host sync
                if not (math.isfinite(loss_val) and math.isfinite(norm_val)):
                    what = "loss" if not math.isfinite(loss_val) else "gradient norm"
                    kept = (f"the last good checkpoint is {last['checkpoint']}" if last["checkpoint"]
                            else "no checkpoint was written yet")
                    raise GroundupError(f"the {what} became {loss_val if what == 'loss' else norm_val} at step "
                                        f"{step}; stopped without saving ({kept}); lower the learning rate "
                                        "(--matrix-lr/--embed-lr) or keep --grad-clip on, then resume or restart")
                for opt in optimizers:
                    opt.step()
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                last["loss"] = loss_val
                tokens_since += bp.batch_tokens
                if step % opts.log_every == 0 or step == total:
                    now = time.perf_counter()
                    dt = max(now - t_mark, 1e-9)
                    clock["train"] += dt
                    tps = tokens_since / dt
                    per_device = fpt * tps / dist.world_size
                    obs.train_step({"step": step, "total": total, "loss": loss_val, "grad_norm": norm_val,
                                    "lr": lr_mult, "tokens": step * bp.batch_tokens, "tok_per_s": tps,
                                    "mfu": per_device / peak,
                                    "mfu_user": per_device / opts.peak_flops if opts.peak_flops else None,
                                    "time": clock["train"]}, print_line=step % print_every == 0 or step == total)
                    tokens_since, t_mark = 0, now
                else:
                    obs.advance(step)
                paused = time.perf_counter()
                if opts.eval_every and step % opts.eval_every == 0 and step != total:
                    evaluate(step)
                if opts.sample_every and step % opts.sample_every == 0 and step != total:
                    sample(step)
                if opts.save_every and step % opts.save_every == 0 and step != total:
                    save(step)
                t_mark += time.perf_counter() - paused  # evaluation and saving do not count as training time
            if start < total or ckpt_path is None:
                evaluate(total)
                if opts.sample_tokens > 0:
                    sample(total)
                final = save(total)
            else:
                final = ckpt_path
        finally:
            obs.close()
        result = {"steps": total, "final_loss": last["loss"], "val_loss": last.get("val_loss"),
                  "val_bpb": last.get("val_bpb"), "checkpoint": str(final), "train_seconds": clock["train"],
                  "params": n_params, "batch_tokens": bp.batch_tokens}
        if dist.is_main:
            result["model"] = str(S.export_model(out, Path(final)))
            png = plot_losses(out / METRICS, out / LOSS_PNG, title=f"{cfg.name} on {shards.name}")
            result["loss_png"] = str(png) if png else None
        barrier(dist)
        return result
    finally:
        destroy(dist)
        torch.set_num_threads(threads_before)


def _val_loader(shards: Path, manifest: dict[str, Any], bp, dist):
    """The validation split's loader (file order, no looping), or None when the shards have too little of it."""
    from groundup.data.loader import DataLoader

    if "val" not in manifest["splits"]:
        return None
    try:
        return DataLoader(shards, bp.micro_batch, bp.seq_len, split="val", rank=dist.rank,
                          world_size=dist.world_size, shuffle=False, loop=False)
    except GroundupError:
        return None
