"""Agreement with lm-evaluation-harness: its `local-completions` backend, run against a live
`groundup serve`, scores the same ARC-Easy and HellaSwag items as groundup's own harness.

lm-eval's task YAMLs normally load their data from the Hugging Face Hub (unreachable here), so
the test writes the same items as local JSONL and points copies of lm-eval's own task configs
(its prompts, its HellaSwag `process_docs`) at them. lm-eval tokenizes through the server's
/tokenize, /detokenize and /tokenizer_info (its `remote` tokenizer backend), sends token ids to
/v1/completions with echo + logprobs, and sums the continuation's log-probabilities itself.
Both sides use fp32 weights; acc and acc_norm must agree within one point.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.serving import live_server

N_ITEMS = 50


def _lm_eval_or_skip():
    return pytest.importorskip("lm_eval", reason="lm-eval is not installed (make test installs it)")


def _items_or_skip(task: str):
    from groundup.errors import GroundupError
    from groundup.eval.tasks import get_task

    try:
        if task == "arc_easy":
            from groundup.eval.sources import read_arrow, source_dir

            return read_arrow(source_dir("arc_easy") / "validation.arrow")[:N_ITEMS], \
                get_task("arc_easy", split="validation")
        from groundup.eval.sources import load_hellaswag

        return load_hellaswag()[:N_ITEMS], get_task("hellaswag")
    except (GroundupError, OSError) as e:
        pytest.skip(f"eval data not pulled ({e}); run `groundup eval pull all`")


def _write_task(tmp_path, name: str, rows: list[dict], body: str) -> None:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / f"{name}.yaml").write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n"
                                           f"  data_files:\n    validation: {data}\n"
                                           f"validation_split: validation\noutput_type: multiple_choice\n"
                                           + textwrap.dedent(body) +
                                           "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")


def test_lm_eval_local_completions_agrees_with_groundup(smollm2_path, tmp_path):
    lm_eval = _lm_eval_or_skip()
    from lm_eval.tasks import TaskManager

    from groundup.eval.harness import evaluate
    from groundup.eval.local_backend import LocalBackend
    from groundup.models import load_model

    arc_rows, arc = _items_or_skip("arc_easy")
    hs_rows, hs = _items_or_skip("hellaswag")
    _write_task(tmp_path, "arc_easy_local", arc_rows, """\
        doc_to_text: "Question: {{question}}\\nAnswer:"
        doc_to_target: "{{choices.label.index(answerKey)}}"
        doc_to_choice: "{{choices.text}}"
        """)
    (tmp_path / "utils.py").write_text("from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n")
    _write_task(tmp_path, "hellaswag_local", hs_rows, """\
        process_docs: !function utils.process_docs
        doc_to_text: "{{query}}"
        doc_to_target: "{{label}}"
        doc_to_choice: "choices"
        """)

    with live_server("--model", "smollm2-135m-instruct", "--dtype", "fp32", "--max-len", "1024",
                     "--max-batch", "4") as (base, _):
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"model=smollm2-135m-instruct,base_url={base}/v1/completions,tokenizer_backend=remote,"
                       f"num_concurrent=1,max_retries=1,tokenized_requests=True",
            tasks=["arc_easy_local", "hellaswag_local"], task_manager=TaskManager(include_path=str(tmp_path)),
            num_fewshot=0, log_samples=False)
    theirs = out["results"]

    model, tok = load_model(smollm2_path, dtype="fp32")
    backend = LocalBackend(model, tok, identity="lm-eval-agreement")
    ours_tasks = {"arc_easy_local": arc, "hellaswag_local": hs}
    for name, task in ours_tasks.items():
        import groundup.eval.tasks as registry

        registry.TASKS[f"_agree_{name}"] = lambda task=task: task
        ours = evaluate(backend, [f"_agree_{name}"], limit=N_ITEMS, show_progress=False)["tasks"][task.name]
        del registry.TASKS[f"_agree_{name}"]
        assert ours["n"] == N_ITEMS
        for metric in ("acc", "acc_norm"):
            mine = ours["metrics"][metric]["value"]
            ref = theirs[name][f"{metric},none"]
            assert abs(mine - ref) <= 0.01 + 1e-9, f"{name} {metric}: groundup {mine:.4f} vs lm-eval {ref:.4f}"
