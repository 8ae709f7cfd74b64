"""`groundup train pretrain`: pretrain a base model on token shards (single process or under torchrun).

Only the standard library is imported here; the handler imports the training code.
Run standalone (`python -m groundup.train.commands train pretrain ...`) it behaves like
`groundup train pretrain ...`, so the command works before it is listed in cli.py.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="pretraining (and later fine-tuning) of groundup models")
    tsub = train.add_subparsers(dest="train_command", required=True)
    p = tsub.add_parser("pretrain", help="pretrain a base model on token shards (`groundup data run` output)",
                        description="Pretrain on SHARDS into --out; resumes automatically when --out holds a "
                                    "checkpoint. Multi-process: torchrun --nproc_per_node=N -m groundup train pretrain")
    p.add_argument("shards", help="tokenized directory from `groundup data run` (manifest.json + train/ + val/)")
    p.add_argument("--out", required=True, help="run directory: checkpoints/, model/, metrics.jsonl, loss.png")
    g = p.add_argument_group("model (default --depth 4)")
    g.add_argument("--depth", type=int, default=None,
                   help="one dial: layers; width = 64 x depth, heads of 64, lrs and batch size follow (nanochat)")
    g.add_argument("--layers", type=int, default=None, help="explicit number of blocks (with --dim/--heads)")
    g.add_argument("--dim", type=int, default=None, help="embedding width")
    g.add_argument("--heads", type=int, default=None, help="attention heads (default dim / 64)")
    g.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA; default = heads)")
    g.add_argument("--mlp-hidden", type=int, default=None, help="MLP hidden size (default 4 x dim)")
    g.add_argument("--activation", default=None, choices=["relu2", "swiglu", "geglu", "gelu"])
    g.add_argument("--config", default=None, help="a groundup config.json for the whole model instead")
    g.add_argument("--tokenizer", default=None,
                   help="the shards' tokenizer (default: the one `groundup data run` recorded)")
    g = p.add_argument_group("batch and length")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per training sequence (default 512)")
    g.add_argument("--batch-tokens", type=int, default=None,
                   help="tokens per optimizer step over all ranks (default: the depth dial's)")
    g.add_argument("--micro-batch", type=int, default=None,
                   help="sequences per forward pass per rank; the rest is gradient accumulation")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 20 tokens per parameter)")
    g = p.add_argument_group("optimizer and schedule")
    g.add_argument("--optimizer", default="muon", choices=["muon", "adamw"],
                   help="muon: Muon for block matrices + AdamW for the rest (default); adamw: AdamW for all")
    g.add_argument("--matrix-lr", type=float, default=None, help="lr of block matrices (default 0.02 Muon, 3e-3 AdamW)")
    g.add_argument("--embed-lr", type=float, default=None, help="embedding lr (default 0.2, width-scaled)")
    g.add_argument("--scalar-lr", type=float, default=None, help="norms/biases lr (default 0.04, width-scaled)")
    g.add_argument("--head-lr", type=float, default=None, help="LM head lr (default 0.004, width-scaled)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--schedule", default="wsd", choices=["wsd", "cosine", "constant"],
                   help="after warmup: warmup-stable-decay (default), cosine, or constant")
    g.add_argument("--warmup", type=int, default=None, help="warmup steps (default 2%% of --steps)")
    g.add_argument("--cooldown", type=float, default=0.2, help="wsd: share of the run spent decaying (default 0.2)")
    g.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr as a share of the peak (default 0)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm (0 = off)")
    g = p.add_argument_group("speed and precision")
    g.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="autocast dtype (auto: bf16 where its measured matmul speed beats fp32)")
    g.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the model (auto: on CUDA only; on CPU it did not pay, see docs/pretraining.md)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    g.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP2 instead of DDP")
    g.add_argument("--seed", type=int, default=0, help="initialisation and data order (same seed, same run)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: at the end only)")
    g.add_argument("--keep", type=int, default=2, help="keep the newest K checkpoints (0 = all; default 2)")
    g.add_argument("--resume", action="store_true", help="require a checkpoint in --out to resume from")
    g.add_argument("--restart", action="store_true", help="discard --out's checkpoints and metrics and start over")
    g = p.add_argument_group("observability")
    g.add_argument("--log-every", type=int, default=1, help="metrics.jsonl record every N steps (default 1)")
    g.add_argument("--eval-every", type=int, default=0,
                   help="validation loss and bits/byte every N steps (default: at the end only)")
    g.add_argument("--eval-tokens", type=int, default=1 << 19, help="validation tokens per evaluation (default 524288)")
    g.add_argument("--sample-every", type=int, default=0, help="print a sample every N steps (and at the end)")
    g.add_argument("--sample-tokens", type=int, default=48)
    g.add_argument("--sample-prompt", default="", help="text the samples continue (default: a new document)")
    g.add_argument("--peak-flops", type=float, default=None,
                   help="your device's peak FLOP/s, for a second MFU figure (the first uses the measured matmul peak)")
    g.add_argument("--no-progress", action="store_true", help="plain log lines instead of the progress bar")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from groundup.errors import GroundupError
    from groundup.train.pretrain import PretrainOptions, pretrain

    if args.resume and args.restart:
        raise GroundupError("--resume and --restart contradict each other; pick one")
    opts = PretrainOptions(
        shards=args.shards, out=args.out, depth=args.depth, layers=args.layers, dim=args.dim, heads=args.heads,
        kv_heads=args.kv_heads, mlp_hidden=args.mlp_hidden, activation=args.activation, config=args.config,
        tokenizer=args.tokenizer, seq_len=args.seq_len, batch_tokens=args.batch_tokens, micro_batch=args.micro_batch,
        steps=args.steps, optimizer=args.optimizer, matrix_lr=args.matrix_lr, embed_lr=args.embed_lr,
        scalar_lr=args.scalar_lr, head_lr=args.head_lr, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup=args.warmup, cooldown=args.cooldown, min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip,
        dtype=args.dtype, compile=args.compile, device=args.device, threads=args.threads, fsdp=args.fsdp,
        seed=args.seed, save_every=args.save_every, keep=args.keep,
        resume="yes" if args.resume else ("no" if args.restart else "auto"), log_every=args.log_every,
        eval_every=args.eval_every, eval_tokens=args.eval_tokens, sample_every=args.sample_every,
        sample_tokens=args.sample_tokens, sample_prompt=args.sample_prompt, peak_flops=args.peak_flops,
        progress=not args.no_progress)
    result = pretrain(opts)
    if result.get("model") is None:  # not rank 0
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        bpb = result.get("val_bpb")
        print(f"{result['model']}: {result['steps']} steps, train loss {result['final_loss']:.4f}"
              + (f", val loss {result['val_loss']:.4f}, {bpb:.4f} bits/byte" if bpb is not None else "")
              + f"; chat: groundup chat --model {result['model']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point with the CLI's error handling (one line per GroundupError)."""
    from groundup.errors import GroundupError

    ap = argparse.ArgumentParser(prog="groundup")
    add_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GroundupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
