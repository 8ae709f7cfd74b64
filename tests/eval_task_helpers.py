"""Shared helpers of the eval task tests (tests/test_eval_task_*.py): where the data is, skipping when
a source is not pulled, and lm-evaluation-harness read offline (its task YAML templates and small helper
modules, rendered with its own jinja environment) plus oe-eval's request dumps, as the references the
prompts are compared with."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from groundup.errors import GroundupError
from groundup.eval import sources as S
from groundup.eval.task import Loglikelihood, TaskConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CFG = TaskConfig()


def pulled(name: str) -> Path:
    try:
        return S.source_dir(name)
    except GroundupError:
        pytest.skip(f"eval data {name} is not pulled; run `groundup eval pull {name}`")


# ---- lm-evaluation-harness, read offline (templates + its small helper modules) -------------------
def lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lm_eval is not installed (pip install --no-deps lm-eval): cannot read its task templates")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def lm_yaml(rel: str) -> dict:
    path = lm_eval_tasks_dir() / rel
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # `!function` helpers: not needed here
    return yaml.load(path.read_text(), Loader=Loader)


def lm_render(template: str, doc: dict):
    from lm_eval.utils import apply_template  # lm-eval's own jinja environment

    return apply_template(template, doc)


def lm_module(rel: str, stubs: tuple[str, ...] = ()):
    """Import one of lm-eval's task helper files, with stand-ins for heavy imports (`evaluate.load`
    would fetch a metric from the Hub at import time, which cannot work offline)."""
    saved = {name: sys.modules.get(name) for name in stubs}
    for name in stubs:
        stub = types.ModuleType(name)
        stub.Dataset = object
        stub.load = lambda *a, **k: types.SimpleNamespace(compute=lambda **kw: ({"pass@1": 0.0}, {}))
        sys.modules[name] = stub
    try:
        spec = importlib.util.spec_from_file_location(f"lm_eval_{rel.replace('/', '_')[:-3]}", lm_eval_tasks_dir() / rel)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        for name, mod_before in saved.items():
            if mod_before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod_before


def item_requests(path: Path) -> dict[int, list[dict]]:
    """oe-eval request records of the evaluated items, by doc_id. oe-eval writes them before its helper
    ("unconditional") records, so reading stops at the first of those; the tests compare counts."""
    import gzip

    out: dict[int, list[dict]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["doc_id"] >= S.UNCOND_OFFSET:
                break
            out.setdefault(r["doc_id"], []).append(r)
    return out


# ---- multiple-choice requests: ours and lm-eval's, as (context, continuations, gold) ----------------
def lm_field(spec, row: dict):
    """How lm-eval resolves doc_to_choice / doc_to_target: a list as is, a doc key, else a rendered
    template (a rendered list or number read back as a Python literal)."""
    import ast

    if isinstance(spec, list):
        return spec
    if spec in row:
        return row[spec]
    text = lm_render(spec, row)
    return ast.literal_eval(text) if text[:1] == "[" or text.isdigit() else text


def mc_lm_eval(cfg: dict, row: dict) -> tuple[str, list[str], int]:
    """lm-eval's zero-shot (context, continuations, gold) for a multiple-choice doc, from its YAML."""
    choices = lm_field(cfg["doc_to_choice"], row)
    gold = lm_field(cfg["doc_to_target"], row)
    return lm_render(cfg["doc_to_text"], row), [" " + c for c in choices], int(gold)


def ours(task, doc) -> tuple[str, list[str], int]:
    reqs = task.requests(doc, CFG)
    assert all(isinstance(r, Loglikelihood) and r.context == reqs[0].context for r in reqs)
    return reqs[0].context, [r.continuation for r in reqs], task.gold(doc)
