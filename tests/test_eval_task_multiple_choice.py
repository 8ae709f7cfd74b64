"""Multiple-choice tasks (ARC, HellaSwag, PIQA, WinoGrande, MMLU): prompts, continuations and gold
indices equal to lm-evaluation-harness's (its own templates and helpers when lm_eval is importable) and
to oe-eval's request dumps shipped in the same wheel; seeded few-shot that never shows the item."""
from __future__ import annotations

import re

import pytest

from groundup.errors import GroundupError
from groundup.eval import sources as S
from groundup.eval.task import TaskConfig
from groundup.eval.tasks import get_task
from tests.eval_task_helpers import (CFG, item_requests, lm_module, lm_render, lm_yaml, mc_lm_eval, ours,
                                     pulled)


def test_arc_prompts_equal_lm_eval_templates():
    pulled("arc_easy")
    cfg = lm_yaml("arc/arc_easy.yaml")
    rows = S.read_arrow(S.source_dir("arc_easy") / "validation.arrow")
    task = get_task("arc_easy", split="validation")
    assert len(rows) == len(task.docs())
    for row, doc in zip(rows[:200], task.docs()):  # (the oe-eval reference below covers every item)
        assert ours(task, doc) == mc_lm_eval(cfg, row)


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
        assert ours(task, doc) == want


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
        assert ours(task, doc) == mc_lm_eval(cfg, row)


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


def test_mmlu_group_is_round_robin_so_a_limit_samples_every_subject():
    """`mmlu` holds each test question exactly once; its first 57 docs are one per subject, so
    `--limit N` spreads over all subjects, and each subject keeps its own order."""
    pulled("mmlu")
    docs = get_task("mmlu").docs()
    assert len(docs) == sum(len(S.load_mmlu(s)) for s in S.mmlu_subjects()) == 14042
    assert len({d["_id"] for d in docs}) == len(docs)
    assert len({d["subject"] for d in docs[:57]}) == 57
    anatomy = [d["question"] for d in docs if d["subject"] == "anatomy"]
    assert anatomy == [r["question"] for r in S.load_mmlu("anatomy")]
