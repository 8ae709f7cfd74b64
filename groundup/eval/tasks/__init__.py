"""The benchmark registry: task names -> constructors, and `get_task(name, **kw)`.

Names: arc_easy, arc_challenge, hellaswag, piqa, winogrande, mmlu (all 57 subjects), mmlu_stem /
mmlu_humanities / mmlu_social_sciences / mmlu_other, mmlu_<subject>, gsm8k, gsm8k_chat, humaneval,
mbpp; and two that take a path, written `bpb:PATH` (bits per byte of a text file) and
`custom:SPEC.toml` (a JSONL task described by a TOML spec, see custom.py). Keyword arguments go
to the constructor (e.g. `get_task("arc_easy", split="validation")`, `get_task("bpb", path=...)`).

Task modules are imported when a task is built, so importing this registry stays cheap.
"""
from __future__ import annotations

from typing import Callable

from groundup.errors import GroundupError
from groundup.eval.tasks.mmlu import CATEGORIES, SUBJECTS


def _arc(subset: str) -> Callable:
    def make(**kw):
        from groundup.eval.tasks.arc import ARC

        return ARC(subset, **kw)
    return make


def _mmlu(subjects: tuple[str, ...] | None, name: str) -> Callable:
    def make(**kw):
        from groundup.eval.tasks.mmlu import MMLU

        return MMLU(subjects, name=name, **kw)
    return make


def _simple(module: str, cls: str, **fixed) -> Callable:
    def make(**kw):
        import importlib

        return getattr(importlib.import_module(f"groundup.eval.tasks.{module}"), cls)(**fixed, **kw)
    return make


TASKS: dict[str, Callable] = {
    "arc_easy": _arc("easy"),
    "arc_challenge": _arc("challenge"),
    "hellaswag": _simple("hellaswag", "HellaSwag"),
    "piqa": _simple("piqa", "PIQA"),
    "winogrande": _simple("winogrande", "WinoGrande"),
    "mmlu": _mmlu(None, "mmlu"),
    **{f"mmlu_{cat}": _mmlu(subjects, f"mmlu_{cat}") for cat, subjects in CATEGORIES.items()},
    **{f"mmlu_{s}": _mmlu((s,), f"mmlu_{s}") for s in SUBJECTS},
    "gsm8k": _simple("gsm8k", "GSM8K"),
    "gsm8k_chat": _simple("gsm8k", "GSM8K", chat=True),
    "humaneval": _simple("humaneval", "HumanEval"),
    "mbpp": _simple("humaneval", "MBPP"),
    "bpb": _simple("bpb", "BitsPerByte"),
    "custom": _simple("custom", "CustomTask"),
}
PATH_TASKS = {"bpb": "path", "custom": "spec_path"}  # `name:PATH` passes PATH as this argument


def known_names() -> str:
    """One line: the task names (MMLU subjects folded into one entry)."""
    plain = [n for n in TASKS if n not in PATH_TASKS and n.removeprefix("mmlu_") not in SUBJECTS]
    return ", ".join(plain + [f"mmlu_<subject> ({len(SUBJECTS)} subjects)", "bpb:PATH", "custom:SPEC.toml"])


def get_task(name: str, **kw):
    """Build the task called `name` (`bpb:PATH` / `custom:SPEC.toml` carry a path)."""
    key, _, arg = name.strip().partition(":")
    key = key.lower()
    if key not in TASKS:
        raise GroundupError(f"unknown task {name!r}; known tasks: {known_names()}")
    if key in PATH_TASKS:
        if arg:
            kw[PATH_TASKS[key]] = arg
        if PATH_TASKS[key] not in kw:
            raise GroundupError(f"task {key} needs a path: write {key}:PATH")
    elif arg:
        raise GroundupError(f"task {key} takes no path (got {name!r}); known tasks: {known_names()}")
    try:
        return TASKS[key](**kw)
    except TypeError as ex:
        if "argument" not in str(ex):
            raise
        raise GroundupError(f"task {key}: {ex}") from None
