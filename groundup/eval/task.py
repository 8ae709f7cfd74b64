"""What an evaluation task is: its items, the requests it makes of a model, and how it scores them.

The harness (eval/harness.py) only knows these types. A task turns each item
("doc": a dict) into requests of the four kinds evaluation frameworks share,
hands them to a backend, and scores the doc from the answers:

- `Loglikelihood(context, continuation)` -> (sum log P(continuation | context),
  whether every continuation token was the greedy choice). Multiple choice asks
  one per choice; `acc`, `acc_norm` (divided by the choice's character length)
  and `acc_bytes` (by its UTF-8 byte length) come from `score_choices`.
- `Generate(context, until, max_tokens)` -> the generated text (greedy, or n
  seeded samples at a temperature). The context is a prompt string, or a tuple
  of chat messages for chat-style tasks.
- `Rolling(text)` -> (sum log P(text), number of tokens): perplexity and
  bits-per-byte over the exact bytes of the text.
- Code tasks use `Generate`, then run the completions in eval/sandbox.py.

Tasks live in eval/tasks/, one module per benchmark, registered in
eval/tasks/__init__.py under a name (`arc_easy`, `mmlu`, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Loglikelihood:
    context: str
    continuation: str


@dataclass(frozen=True)
class Generate:
    context: str | tuple  # prompt text, or a tuple of chat messages ({"role", "content"} dicts, frozen as tuples)
    until: tuple[str, ...] = ()
    max_tokens: int = 256
    n: int = 1  # samples (code tasks' pass@k); the result is a str when n == 1, else a list of n strs
    temperature: float = 0.0  # 0 = greedy; samples are seeded, so reruns give the same texts


@dataclass(frozen=True)
class Rolling:
    text: str


Request = Loglikelihood | Generate | Rolling


@dataclass
class TaskConfig:
    """Per-run settings a task reads (the harness fills them from the command line)."""
    num_fewshot: int | None = None  # None: the task's own default
    chat: bool = False  # render prompts with the model's chat template (tasks that support it)
    seed: int = 1234  # few-shot sampling
    extra: dict = field(default_factory=dict)


class Task(Protocol):
    name: str
    output_type: str  # "multiple_choice" | "generate_until" | "rolling" | "code"
    default_fewshot: int

    def docs(self) -> list[dict]:
        """The evaluated items, in a fixed order (the harness applies --limit)."""

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        """The requests this doc needs (few-shot examples drawn deterministically from cfg.seed)."""

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        """Metrics for one doc from the results of its requests, in order (averaged over docs)."""


def score_choices(results: list[tuple[float, bool]], choices: list[str], gold: int) -> dict[str, float]:
    """acc / acc_norm / acc_bytes for a multiple-choice doc (lm-evaluation-harness's definitions).

    acc_norm divides each choice's log-likelihood by its character length; acc_bytes by its
    UTF-8 byte length. Ties go to the first choice, as with argmax."""
    ll = [r[0] for r in results]
    pick = max(range(len(ll)), key=lambda i: ll[i])
    norm = max(range(len(ll)), key=lambda i: ll[i] / max(1, len(choices[i])))
    byte = max(range(len(ll)), key=lambda i: ll[i] / max(1, len(choices[i].encode())))
    return {"acc": float(pick == gold), "acc_norm": float(norm == gold), "acc_bytes": float(byte == gold)}


def bits_per_byte(total_logprob: float, text: str) -> float:
    """-sum(log P) in bits over the text's UTF-8 bytes (the tokenizer-independent score)."""
    return -total_logprob / math.log(2) / max(1, len(text.encode("utf-8")))
