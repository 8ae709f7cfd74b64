"""Generate-until tasks: GSM8K (answer extraction, k-shot prompts in lm-eval's layout, chat zero-shot)
and the code tasks HumanEval and MBPP (program assembly, lm-eval's MBPP prompt, tests run in the sandbox)."""
from __future__ import annotations

import pytest

from groundup.errors import GroundupError
from groundup.eval import sources as S
from groundup.eval.task import Generate, TaskConfig
from groundup.eval.tasks import get_task
from tests.eval_task_helpers import CFG, SHARED, lm_module, lm_render, lm_yaml, pulled


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
