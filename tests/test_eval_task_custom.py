"""Custom tasks from JSONL + TOML, bits-per-byte (exact-text chunks, byte-weighted aggregation) and the
task registry's names and errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from groundup.errors import GroundupError
from groundup.eval.task import Generate, Rolling, bits_per_byte
from groundup.eval.tasks import TASKS, get_task, known_names
from tests.eval_task_helpers import CFG, SHARED


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
