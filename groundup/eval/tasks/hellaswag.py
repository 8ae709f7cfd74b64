"""HellaSwag with lm-eval's clean-up: the context and the four endings, scored by log-likelihood.

lm-evaluation-harness's hellaswag: ctx = ctx_a + " " + ctx_b.capitalize(); the query is
preprocess(activity_label + ": " + ctx) and each choice preprocess(ending), where preprocess
strips the text, turns the WikiHow " [title]" marker into ". ", deletes any other "[...]" marker
and folds double spaces once. Validation split (10,042 items), zero-shot by default; k-shot
examples are drawn from the other validation items (lm-eval would use train).
"""
from __future__ import annotations

import re

from groundup.eval.sources import load_hellaswag
from groundup.eval.tasks.multiple_choice import MultipleChoiceTask

_BRACKETED = re.compile(r"\[.*?\]")


def preprocess(text: str) -> str:
    """HellaSwag's text clean-up (the WikiHow half carries bracketed section markers)."""
    text = text.strip().replace(" [title]", ". ")
    text = _BRACKETED.sub("", text)
    return text.replace("  ", " ")


def query(row: dict) -> str:
    return preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())


class HellaSwag(MultipleChoiceTask):
    name = "hellaswag"
    default_fewshot = 0

    def load_docs(self) -> list[dict]:
        return [{"ind": r["ind"], "query": query(r), "choices": [preprocess(e) for e in r["endings"]],
                 "gold": int(r["label"]), "_id": str(i)} for i, r in enumerate(load_hellaswag())]

    def prompt(self, doc: dict) -> str:
        return doc["query"]

    def choices(self, doc: dict) -> list[str]:
        return list(doc["choices"])

    def gold(self, doc: dict) -> int:
        return doc["gold"]
