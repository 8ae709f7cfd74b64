"""MMLU, 57 subjects, in lm-evaluation-harness's default format (`mmlu`, `mmlu_<subject>`).

Each subject's prompt opens with "The following are multiple choice questions (with answers)
about {subject, underscores as spaces}.\\n\\n"; an item reads "{question.strip()}\\nA. ..\\nB. ..\\n
C. ..\\nD. ..\\nAnswer:" and is scored over the continuations " A" .. " D". Few-shot examples are
the first k of the same subject's dev split (lm-eval's first_n sampler; 5 by default, the dev
split's size), then its validation items, never the evaluated item itself. The test split is
evaluated (14,042 items); `mmlu` holds them all, so the mean over its docs is lm-eval's
size-weighted group score. `mmlu` lists its docs round-robin over the subjects (the first question of
every subject, then the second, ...), so a `--limit N` run samples all 57 subjects evenly; its items also score acc_stem / acc_humanities / acc_social_sciences /
acc_other (each on its own items only, so their means are the category scores).
"""
from __future__ import annotations

from groundup.eval.sources import load_mmlu, mmlu_subjects
from groundup.eval.task import TaskConfig, score_choices
from groundup.eval.tasks.multiple_choice import MultipleChoiceTask

CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": ("abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
             "college_computer_science", "college_mathematics", "college_physics", "computer_security",
             "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
             "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
             "high_school_physics", "high_school_statistics", "machine_learning"),
    "humanities": ("formal_logic", "high_school_european_history", "high_school_us_history",
                   "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
                   "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
                   "world_religions"),
    "social_sciences": ("econometrics", "high_school_geography", "high_school_government_and_politics",
                        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
                        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
                        "sociology", "us_foreign_policy"),
    "other": ("business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
              "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
              "professional_accounting", "professional_medicine", "virology"),
}
SUBJECTS: tuple[str, ...] = tuple(sorted(s for group in CATEGORIES.values() for s in group))
CATEGORY_OF = {s: c for c, group in CATEGORIES.items() for s in group}
LETTERS = ("A", "B", "C", "D")


class MMLU(MultipleChoiceTask):
    default_fewshot = 5
    fewshot_first_n = True

    def __init__(self, subjects: list[str] | tuple[str, ...] | None = None, split: str = "test",
                 name: str | None = None):
        self.subjects = tuple(subjects) if subjects else SUBJECTS
        self.split = split
        self.name = name or (f"mmlu_{self.subjects[0]}" if len(self.subjects) == 1 else "mmlu")
        self._docs: list[dict] | None = None
        self._pools: dict[str, list[dict]] = {}

    def docs(self) -> list[dict]:
        if self._docs is None:
            missing = set(self.subjects) - set(mmlu_subjects())
            if missing:
                from groundup.errors import GroundupError

                raise GroundupError(f"MMLU subjects not in the pulled data: {', '.join(sorted(missing))}")
            per_subject = [[{**row, "subject": subject, "_id": f"{subject}/{self.split}/{i}"}
                            for i, row in enumerate(load_mmlu(subject, self.split))] for subject in self.subjects]
            # round-robin over subjects: the full set is unchanged, and `--limit N` (the first N docs)
            # takes ~N/57 questions from every subject instead of all of the first few subjects
            longest = max((len(rows) for rows in per_subject), default=0)
            self._docs = [rows[i] for i in range(longest) for rows in per_subject if i < len(rows)]
        return self._docs

    def fewshot_pool(self, doc: dict) -> list[dict]:
        subject = doc["subject"]
        if subject not in self._pools:
            self._pools[subject] = [{**row, "subject": subject, "_id": f"{subject}/{split}/{i}"}
                                    for split in ("dev", "validation")
                                    for i, row in enumerate(load_mmlu(subject, split))]
        return self._pools[subject]

    def description(self, doc: dict) -> str:
        return f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"

    def prompt(self, doc: dict) -> str:
        c = doc["choices"]
        return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"

    def choices(self, doc: dict) -> list[str]:
        return list(LETTERS)

    def gold(self, doc: dict) -> int:
        return int(doc["answer"])

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        """acc / acc_norm / acc_bytes, plus acc_<category> (present only on that category's items, so the
        harness's mean over the docs that have it is the category score)."""
        out = score_choices(results, self.choices(doc), self.gold(doc))
        category = CATEGORY_OF.get(doc["subject"])
        if category and len(self.subjects) > 1:
            out[f"acc_{category}"] = out["acc"]
        return out
