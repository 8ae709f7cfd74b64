"""Validation loss and bits per byte, measured over the exact bytes of held-out text.

Bits per byte compares models with different tokenizers honestly: a tokenizer with longer
tokens has a higher loss per token but fewer tokens per byte. Over a stretch of text,

    bits/byte = (sum of the token NLLs in nats) / ln 2 / (UTF-8 bytes those tokens decode to)

`token_byte_lengths` gives each vocabulary id the number of bytes it decodes to (special tokens:
0, they stand for no text); targets with 0 bytes (the BOS that starts each document) are left out
of both sums, so exactly the held-out text's bytes are counted. `val_loss` is the plain mean NLL
over every target token.

`evaluate_split` runs over the validation split of the shards (each rank its share, summed over
ranks); `evaluate_text` scores a text given as a string (the benchmark's held-out 10%), BOS first
so every byte of it is predicted, and checks that its tokens decode back to exactly its bytes.
`sample_text` draws the short samples a training run prints.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F

from groundup.errors import GroundupError


def token_byte_lengths(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """int64 [vocab_size]: UTF-8 bytes each id decodes to (0 for special tokens and ids past the tokenizer)."""
    n = min(vocab_size, int(tokenizer.vocab_size))
    lengths = torch.zeros(vocab_size, dtype=torch.int64)
    special = getattr(tokenizer, "is_special", lambda i: False)
    lengths[:n] = torch.tensor([0 if special(i) else len(tokenizer.token_bytes(i)) for i in range(n)],
                               dtype=torch.int64)
    return lengths


def _nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")


@torch.no_grad()
def evaluate_split(forward: Callable[[torch.Tensor], torch.Tensor], batches, token_bytes: torch.Tensor,
                   device: torch.device, autocast=None, max_batches: int | None = None,
                   reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Mean NLL per token and bits per byte over `batches` of (x, y); `reduce` sums over ranks."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # nll all, tokens, nll of text tokens, bytes
    tb = token_bytes.to(device)
    for i, (x, y) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast or nullcontext():
            logits = forward(x)
        nll = _nll(logits, y).double()
        nbytes = tb[y.reshape(-1)]
        sums += torch.stack([nll.sum(), torch.tensor(float(nll.numel()), dtype=torch.float64, device=device),
                             (nll * (nbytes > 0)).sum(), nbytes.sum().double()])
    if reduce is not None:
        sums = reduce(sums)
    nll_all, tokens, nll_text, nbytes = (float(v) for v in sums.cpu())
    if tokens == 0:
        raise GroundupError("the validation split gave no batches; use a smaller --seq-len or more validation data")
    return {"val_loss": nll_all / tokens, "val_bpb": nll_text / math.log(2) / max(nbytes, 1.0),
            "val_tokens": int(tokens), "val_bytes": int(nbytes)}


@torch.no_grad()
def evaluate_text(model: torch.nn.Module, tokenizer: Any, text: str, seq_len: int, *, batch_size: int = 8,
                  autocast=None) -> dict[str, float]:
    """Bits per byte of `text` (a str): BOS + its tokens, cut into windows of `seq_len` predictions.

    Each window starts with fresh context (the previous window's last token as its first input).
    Raises a GroundupError if the tokens do not decode back to exactly `text`'s bytes."""
    device = next(model.parameters()).device
    data = text.encode("utf-8")
    ids = tokenizer.encode(text, add_bos=False)
    bos = getattr(tokenizer, "bos_id", None)
    if bos is None:
        raise GroundupError("bits per byte needs a tokenizer with a BOS token to predict the first byte from")
    decoded = b"".join(tokenizer.token_bytes(int(i)) for i in ids)
    if decoded != data:
        raise GroundupError("the tokenizer does not decode this text back to the same bytes; bits per byte would "
                            "not count the text's exact bytes")
    stream = torch.tensor([bos, *ids], dtype=torch.int64)
    n_pred = len(stream) - 1
    windows = [(s, min(s + seq_len, n_pred)) for s in range(0, n_pred, seq_len)]
    total = 0.0
    for b in range(0, len(windows), batch_size):
        group = windows[b:b + batch_size]
        width = max(e - s for s, e in group)
        x = torch.zeros(len(group), width, dtype=torch.int64)
        y = torch.full((len(group), width), -100, dtype=torch.int64)
        for r, (s, e) in enumerate(group):
            x[r, :e - s] = stream[s:e]
            y[r, :e - s] = stream[s + 1:e + 1]
        with autocast or nullcontext():
            logits = model(x.to(device))
        total += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1),
                                       ignore_index=-100, reduction="sum"))
    return {"bpb": total / math.log(2) / max(len(data), 1), "loss": total / max(n_pred, 1), "bytes": len(data),
            "tokens": n_pred}


@torch.no_grad()
def sample_text(model: torch.nn.Module, tokenizer: Any, prompt: str, max_tokens: int, *, seed: int,
                context: int, temperature: float = 0.8, top_k: int = 50, autocast=None) -> str:
    """A short continuation of BOS + `prompt` (no KV cache: a few dozen tokens at intervals).

    Uses its own random generator, so sampling never moves the training RNG; under FSDP every
    rank must call this (same seed, same tokens)."""
    device = next(model.parameters()).device
    ids = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    ids += tokenizer.encode(prompt, add_bos=False) if prompt else []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    out: list[int] = []
    try:
        for _ in range(max_tokens):
            x = torch.tensor([ids[-context:]], dtype=torch.int64, device=device)
            with autocast or nullcontext():
                logits = model(x)[0, -1].float().cpu()
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, -math.inf)
            nxt = int(torch.multinomial(torch.softmax(logits / max(temperature, 1e-5), -1), 1, generator=gen))
            if nxt == tokenizer.bos_id or nxt in getattr(tokenizer, "eos_ids", ()):
                break
            ids.append(nxt)
            out.append(nxt)
    finally:
        model.train(was_training)
    return prompt + tokenizer.decode(out)
