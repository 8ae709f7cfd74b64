"""PIQA: "Question: {goal}\\nAnswer:" scored over " {sol1}" / " {sol2}" (lm-eval's piqa), validation split.

Zero-shot by default; k-shot examples are drawn from the other validation items (lm-eval would
use the train split, which the PyPI source does not ship).
"""
from __future__ import annotations

from groundup.eval.sources import load_piqa
from groundup.eval.tasks.multiple_choice import MultipleChoiceTask, with_ids


class PIQA(MultipleChoiceTask):
    name = "piqa"
    default_fewshot = 0

    def load_docs(self) -> list[dict]:
        return with_ids(load_piqa())

    def prompt(self, doc: dict) -> str:
        return f"Question: {doc['goal']}\nAnswer:"

    def choices(self, doc: dict) -> list[str]:
        return [doc["sol1"], doc["sol2"]]

    def gold(self, doc: dict) -> int:
        return int(doc["label"])
