"""WinoGrande by partial evaluation (Trinh & Le 2018), as lm-evaluation-harness scores it.

The sentence has one "_" blank. Each option gives a context, the sentence up to the blank with
that option filled in; the continuation is the same for both, " " + the rest of the sentence after
the blank (stripped). The option whose context makes that continuation likelier wins, so only
`acc` is meaningful (acc_norm equals it: the continuation is shared). Validation split (1,267
items), zero-shot by default; a shot is its sentence with the right option filled in, then
" " + the rest and "\\n\\n"; shots come from the other validation items (lm-eval would use train).
"""
from __future__ import annotations

from groundup.eval.sources import load_winogrande
from groundup.eval.task import Loglikelihood, Request, TaskConfig, score_choices
from groundup.eval.tasks.multiple_choice import MultipleChoiceTask, with_ids


def partial_contexts(doc: dict) -> list[str]:
    """The sentence up to the blank with each option filled in."""
    cut = doc["sentence"].index("_")
    return [doc["sentence"][:cut] + opt for opt in (doc["option1"], doc["option2"])]


def continuation(doc: dict) -> str:
    """The words after the blank, shared by both options (without the leading space)."""
    return doc["sentence"][doc["sentence"].index("_") + 1:].strip()


class WinoGrande(MultipleChoiceTask):
    name = "winogrande"
    default_fewshot = 0

    def load_docs(self) -> list[dict]:
        return with_ids(load_winogrande())

    def gold(self, doc: dict) -> int:
        return {"1": 0, "2": 1}[doc["answer"]]

    def prompt(self, doc: dict) -> str:  # the shot text: the right option filled in
        return partial_contexts(doc)[self.gold(doc)]

    def choices(self, doc: dict) -> list[str]:  # a shot's "answer" is the shared continuation
        return [continuation(doc)] * 2

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        shots = self.shots_text(doc, cfg)
        rest = continuation(doc)
        return [Loglikelihood(shots + ctx, " " + rest) for ctx in partial_contexts(doc)]

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        return score_choices(results, [continuation(doc)] * 2, self.gold(doc))
