"""ARC-Easy and ARC-Challenge: "Question: {question}\\nAnswer:" scored over " {choice}" (lm-eval's arc_easy).

The evaluated split is lm-eval's: test (2,376 Easy / 1,172 Challenge items); `split="validation"`
gives the 570 / 299 validation items. Zero-shot by default, as lm-eval. Few-shot examples
come from the validation split when evaluating test, else from the other validation items
(lm-eval would draw from the train split, which the PyPI sources do not ship, so k-shot ARC
prompts are groundup's own).
"""
from __future__ import annotations

from groundup.eval.sources import load_arc
from groundup.eval.tasks.multiple_choice import MultipleChoiceTask, with_ids


class ARC(MultipleChoiceTask):
    default_fewshot = 0

    def __init__(self, subset: str = "easy", split: str = "test"):
        self.subset, self.split = subset, split
        self.name = f"arc_{subset}"
        self._pool: list[dict] | None = None

    def load_docs(self) -> list[dict]:
        return with_ids(load_arc(self.subset, self.split), f"{self.split}:")

    def fewshot_pool(self, doc: dict) -> list[dict]:
        if self.split == "validation":
            return self.docs()
        if self._pool is None:
            self._pool = with_ids(load_arc(self.subset, "validation"), "validation:")
        return self._pool

    def prompt(self, doc: dict) -> str:
        return f"Question: {doc['question']}\nAnswer:"

    def choices(self, doc: dict) -> list[str]:
        return list(doc["choices"])

    def gold(self, doc: dict) -> int:
        return int(doc["gold"])
