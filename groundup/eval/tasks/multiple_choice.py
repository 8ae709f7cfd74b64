"""Multiple choice by log-likelihood, laid out as lm-evaluation-harness lays it out; few-shot draws.

A multiple-choice task names, per doc, a prompt, its choices and the gold index. The context is

    description + (prompt(shot) + " " + choices(shot)[gold(shot)] + "\\n\\n") for each shot + prompt(doc)

and each choice is scored as the continuation " " + choice, so acc / acc_norm / acc_bytes come out as
lm-eval's (acc_norm divides by the choice's length *without* that leading space).

Multiple-choice prompts are always plain text (`cfg.chat` is for generation tasks): the
backends score a log-likelihood over a text context. (lm-eval's `--apply_chat_template` layout
would be: the description as a system message, shots + prompt as one user message, and each
choice, without the leading space, right after the assistant turn opens.)

Few-shot examples come from `fewshot_pool(doc)`, never containing the doc itself: the first k
(`fewshot_first_n`, as lm-eval's MMLU) or k drawn with a generator seeded by (cfg.seed, task,
doc id), so a doc's prompt does not depend on which other docs are evaluated or in what order.
"""
from __future__ import annotations

import random

from groundup.errors import GroundupError
from groundup.eval.task import Loglikelihood, Request, TaskConfig, score_choices


def chat_context(messages: list[dict]) -> tuple:
    """Chat messages frozen for a Generate request: a tuple of ((key, value), ...) per message; dict(m) undoes it."""
    return tuple(tuple(m.items()) for m in messages)


def num_shots(task, cfg: TaskConfig) -> int:
    return task.default_fewshot if cfg.num_fewshot is None else cfg.num_fewshot


def draw_fewshot(task, doc: dict, k: int, cfg: TaskConfig) -> list[dict]:
    """k examples from task.fewshot_pool(doc), never doc itself; deterministic for (seed, task, doc)."""
    if k <= 0:
        return []
    pool = task.fewshot_pool(doc)
    m = min(k + 1, len(pool))  # one spare, in case the doc itself is among them
    if getattr(task, "fewshot_first_n", False):
        picks = range(m)
    else:
        picks = random.Random(f"{cfg.seed}:{task.name}:{doc.get('_id')}").sample(range(len(pool)), m)
    shots = [pool[i] for i in picks if pool[i].get("_id") != doc.get("_id")][:k]
    if len(shots) < k:
        raise GroundupError(f"{task.name}: {k} few-shot examples asked for, only {len(shots)} available")
    return shots


def with_ids(rows: list[dict], prefix: str = "") -> list[dict]:
    """The rows with a stable `_id` (their position, with a prefix) used to exclude a doc from its shots."""
    return [{**r, "_id": f"{prefix}{i}"} for i, r in enumerate(rows)]


class MultipleChoiceTask:
    """Base for tasks that pick one of several continuations; subclasses give docs / prompt / choices / gold."""

    name = "multiple_choice"
    output_type = "multiple_choice"
    default_fewshot = 0
    fewshot_first_n = False

    _docs: list[dict] | None = None

    def docs(self) -> list[dict]:
        """The evaluated items, loaded once (`load_docs`)."""
        if self._docs is None:
            self._docs = self.load_docs()
        return self._docs

    def load_docs(self) -> list[dict]:
        raise NotImplementedError

    def prompt(self, doc: dict) -> str:
        raise NotImplementedError

    def choices(self, doc: dict) -> list[str]:
        raise NotImplementedError

    def gold(self, doc: dict) -> int:
        raise NotImplementedError

    def description(self, doc: dict) -> str:
        return ""

    def fewshot_pool(self, doc: dict) -> list[dict]:
        """Where shots come from; by default the evaluated docs (the doc itself is always left out)."""
        return self.docs()

    def shots_text(self, doc: dict, cfg: TaskConfig) -> str:
        return "".join(self.prompt(ex) + " " + self.choices(ex)[self.gold(ex)] + "\n\n"
                       for ex in draw_fewshot(self, doc, num_shots(self, cfg), cfg))

    def context(self, doc: dict, cfg: TaskConfig) -> str:
        return self.description(doc) + self.shots_text(doc, cfg) + self.prompt(doc)

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        ctx = self.context(doc, cfg)
        return [Loglikelihood(ctx, " " + c) for c in self.choices(doc)]

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        return score_choices(results, self.choices(doc), self.gold(doc))
