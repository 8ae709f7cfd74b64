"""A task of your own: a JSONL file of items plus a small TOML spec (`custom:path/to/spec.toml`).

    name = "capitals"
    data = "capitals.jsonl"          # one JSON object per line; a relative path is next to the spec
    output_type = "multiple_choice"  # or "generate_until"
    prompt = "Question: {question}\\nAnswer:"   # {field} placeholders ({{ and }} for braces)
    description = ""                 # text before the few-shot examples
    fewshot = 0                      # default shots, drawn (seeded) from the other items
    fewshot_separator = "\\n\\n"      # after each shot
    target_delimiter = " "           # between the prompt and its answer / each choice
    # multiple_choice:
    choices = "options"              # a field holding a list, or a fixed list such as ["A", "B", "C", "D"]
    gold = "label"                   # a field: the index, the gold choice's text, or its letter (A, B, ..)
    metrics = ["acc", "acc_norm"]    # any of acc, acc_norm, acc_bytes (default: all three)
    # generate_until:
    target = "answer"                # the field holding the expected answer
    until = ["\\n"]                   # stop sequences
    max_tokens = 64
    answer_regex = "answer is (.+)"  # optional: compare the first group of the first match
    metrics = ["exact_match"]        # exact_match (stripped) and/or contains

Multiple choice is scored like the built-in tasks (eval/tasks/multiple_choice.py), always on a
plain prompt; generation by comparing the (extracted) output with the target, and with
`cfg.chat` its prompt goes as chat messages (the description as the system message).
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from groundup.errors import GroundupError
from groundup.eval.task import Generate, Loglikelihood, Request, TaskConfig
from groundup.eval.tasks.multiple_choice import (MultipleChoiceTask, chat_context, draw_fewshot, num_shots,
                                                   with_ids)

KEYS = {"name", "data", "output_type", "prompt", "description", "fewshot", "fewshot_separator", "target_delimiter",
        "choices", "gold", "metrics", "target", "until", "max_tokens", "answer_regex"}
MC_METRICS = ("acc", "acc_norm", "acc_bytes")
GEN_METRICS = ("exact_match", "contains")


def _render(template: str, doc: dict, where: str) -> str:
    try:
        return template.format_map(doc)
    except KeyError as ex:
        raise GroundupError(f"{where}: the prompt uses {{{ex.args[0]}}} but an item has no such field") from None
    except (ValueError, IndexError) as ex:
        raise GroundupError(f"{where}: bad prompt template ({ex}); write literal braces as {{{{ and }}}}") from None


class CustomTask(MultipleChoiceTask):
    def __init__(self, spec_path: str | Path):
        self.spec_path = Path(spec_path)
        try:
            spec = tomllib.loads(self.spec_path.read_text(encoding="utf-8"))
        except OSError as ex:
            raise GroundupError(f"cannot read task spec {self.spec_path}: {ex.strerror}") from None
        except tomllib.TOMLDecodeError as ex:
            raise GroundupError(f"{self.spec_path} is not valid TOML: {ex}") from None
        unknown = set(spec) - KEYS
        if unknown:
            raise GroundupError(f"{self.spec_path}: unknown keys {', '.join(sorted(unknown))}; known: "
                                f"{', '.join(sorted(KEYS))}")
        for key in ("data", "prompt"):
            if key not in spec:
                raise GroundupError(f"{self.spec_path}: '{key}' is required")
        self.spec = spec
        self.name = spec.get("name") or self.spec_path.stem
        self.output_type = spec.get("output_type", "multiple_choice")
        if self.output_type not in ("multiple_choice", "generate_until"):
            raise GroundupError(f"{self.spec_path}: output_type must be multiple_choice or generate_until")
        needed = ("choices", "gold") if self.output_type == "multiple_choice" else ("target",)
        for key in needed:
            if key not in spec:
                raise GroundupError(f"{self.spec_path}: '{key}' is required for {self.output_type}")
        allowed = MC_METRICS if self.output_type == "multiple_choice" else GEN_METRICS
        self.metrics = tuple(spec.get("metrics") or allowed)
        bad = [m for m in self.metrics if m not in allowed]
        if bad:
            raise GroundupError(f"{self.spec_path}: metrics {bad} are not for {self.output_type}; use {list(allowed)}")
        self.default_fewshot = int(spec.get("fewshot", 0))
        self.separator = spec.get("fewshot_separator", "\n\n")
        self.delimiter = spec.get("target_delimiter", " ")
        self.answer_regex = re.compile(spec["answer_regex"]) if spec.get("answer_regex") else None
        data = Path(spec["data"])
        self.data_path = data if data.is_absolute() else self.spec_path.parent / data
        self._docs: list[dict] | None = None

    def docs(self) -> list[dict]:
        if self._docs is None:
            rows = []
            try:
                with open(self.data_path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        if line.strip():
                            try:
                                rows.append(json.loads(line))
                            except json.JSONDecodeError as ex:
                                raise GroundupError(f"{self.data_path}:{n}: not JSON ({ex.msg})") from None
            except OSError as ex:
                raise GroundupError(f"cannot read task data {self.data_path}: {ex.strerror}") from None
            if not rows:
                raise GroundupError(f"{self.data_path} has no items")
            self._docs = with_ids(rows)
        return self._docs

    def description(self, doc: dict) -> str:
        return self.spec.get("description", "")

    def prompt(self, doc: dict) -> str:
        return _render(self.spec["prompt"], doc, str(self.spec_path))

    def choices(self, doc: dict) -> list[str]:
        spec = self.spec["choices"]
        value = spec if isinstance(spec, list) else doc.get(spec)
        if not isinstance(value, list) or not value:
            raise GroundupError(f"{self.spec_path}: choices field {spec!r} is not a non-empty list in an item")
        return [str(v) for v in value]

    def gold(self, doc: dict) -> int:
        value, choices = doc.get(self.spec["gold"]), self.choices(doc)
        if isinstance(value, bool) or value is None:
            raise GroundupError(f"{self.spec_path}: gold field {self.spec['gold']!r} missing or not usable in an item")
        if isinstance(value, int) and 0 <= value < len(choices):
            return value
        text = str(value)
        if text in choices:
            return choices.index(text)
        if len(text) == 1 and "A" <= text.upper() <= "Z" and ord(text.upper()) - 65 < len(choices):
            return ord(text.upper()) - 65
        if text.isdigit() and int(text) < len(choices):
            return int(text)
        raise GroundupError(f"{self.spec_path}: gold {value!r} is not an index, a choice or a letter of {choices}")

    def shots_text(self, doc: dict, cfg: TaskConfig) -> str:
        shots = draw_fewshot(self, doc, num_shots(self, cfg), cfg)
        if self.output_type == "multiple_choice":
            return "".join(self.prompt(ex) + self.delimiter + self.choices(ex)[self.gold(ex)] + self.separator
                           for ex in shots)
        return "".join(self.prompt(ex) + self.delimiter + str(ex[self.spec["target"]]) + self.separator
                       for ex in shots)

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        if self.output_type == "multiple_choice":
            ctx = self.context(doc, cfg)
            return [Loglikelihood(ctx, self.delimiter + c) for c in self.choices(doc)]
        until, max_tokens = tuple(self.spec.get("until", ())), int(self.spec.get("max_tokens", 256))
        if cfg.chat:
            messages = [{"role": "system", "content": self.description(doc)}] if self.description(doc) else []
            messages.append({"role": "user", "content": self.shots_text(doc, cfg) + self.prompt(doc)})
            return [Generate(chat_context(messages), until, max_tokens)]
        return [Generate(self.context(doc, cfg), until, max_tokens)]

    def extract(self, output: str) -> str:
        if self.answer_regex is None:
            return output.strip()
        m = self.answer_regex.search(output)
        return (m.group(1) if m and m.groups() else m.group(0) if m else "").strip()

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        if self.output_type == "multiple_choice":
            scores = super().score(doc, results, cfg)
            return {m: scores[m] for m in self.metrics}
        got, want = self.extract(results[0]), str(doc[self.spec["target"]]).strip()
        out = {"exact_match": float(got == want), "contains": float(bool(want) and want in results[0])}
        return {m: out[m] for m in self.metrics}
