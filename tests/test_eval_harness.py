"""The evaluation harness on the real SmolLM2: batched scoring equals one-at-a-time scoring,
the cache makes a rerun free and resumes an interrupted one, pass@k matches the binomial
definition, and reports are written."""
from __future__ import annotations

import json
from fractions import Fraction
from math import comb

import pytest

from groundup.eval.cache import AnswerCache
from groundup.eval.harness import evaluate, mean_stderr
from groundup.eval.local_backend import LocalBackend
from groundup.eval.passk import pass_at_k
from groundup.eval.task import Generate, Loglikelihood, Rolling, TaskConfig, bits_per_byte, score_choices

QUESTIONS = [
    ("What is the capital of France?", ["Paris", "London", "Berlin", "Madrid"], 0),
    ("How many legs does a spider have?", ["six", "eight", "ten"], 1),
    ("Which planet is closest to the sun?", ["Venus", "Mercury", "Mars", "Jupiter"], 1),
    ("What color is the sky on a clear day?", ["green", "blue"], 1),
    ("What do bees make?", ["milk", "silk", "honey"], 2),
]


class QuizTask:
    """A small multiple-choice task in the harness's shape (the real ones live in eval/tasks/)."""
    name, output_type, default_fewshot = "quiz", "multiple_choice", 0

    def docs(self):
        return [{"q": q, "choices": c, "gold": g} for q, c, g in QUESTIONS]

    def requests(self, doc, cfg):
        return [Loglikelihood(f"Question: {doc['q']}\nAnswer:", " " + c) for c in doc["choices"]]

    def score(self, doc, results, cfg):
        return score_choices(results, doc["choices"], doc["gold"])


@pytest.fixture(scope="module")
def backend(smollm2_path):
    from groundup.models import load_model

    model, tok = load_model(smollm2_path, dtype="fp32")
    return LocalBackend(model, tok, identity="smollm2-fp32-test")


@pytest.fixture
def quiz(monkeypatch):
    import groundup.eval.tasks as tasks

    monkeypatch.setitem(tasks.TASKS, "quiz", QuizTask)
    return QuizTask()


def test_batched_loglikelihood_equals_single_sequence_scoring(backend):
    from groundup.engine.engine import Engine

    engine = Engine(backend.model, backend.tok)
    reqs = [r for d in QuizTask().docs() for r in QuizTask().requests(d, TaskConfig())]
    reqs.append(Loglikelihood("The cat sat on the ", "mat"))  # trailing space moves to the continuation
    got = backend.loglikelihood(reqs)
    for r, (lp, greedy) in zip(reqs, got):
        ctx, cont = backend.encode_pair(r.context, r.continuation)
        scored = engine.score(ctx + cont, top=1)[len(ctx):]
        assert lp == pytest.approx(sum(s[0] for s in scored), abs=2e-3)
        assert greedy == all(s[1][0][0] == t for s, t in zip(scored, cont))


def test_rolling_counts_every_token_once_across_windows(backend, shared_text):
    text = shared_text[:2500]
    n_tokens = len(backend.tok.encode(text, add_bos=False))
    backend.max_len, saved = 128, backend.max_len  # several windows
    try:
        (short_total, n), = backend.rolling([Rolling(text)])
    finally:
        backend.max_len = saved
    (long_total, n2), = backend.rolling([Rolling(text)])
    assert n == n2 == n_tokens
    # a longer window sees more context: never much worse, and the same order of magnitude
    assert long_total > short_total - 5 and abs(long_total - short_total) < 0.2 * abs(short_total)
    assert 0.5 < bits_per_byte(long_total, text) < 3.0


def test_evaluate_scores_and_the_cache_makes_reruns_free(backend, quiz, tmp_path, monkeypatch):
    cache = AnswerCache(tmp_path / "c.sqlite")
    first = evaluate(backend, ["quiz"], cache=cache, show_progress=False)
    m = first["tasks"]["quiz"]["metrics"]
    assert first["tasks"]["quiz"]["n"] == len(QUESTIONS) and cache.count("smollm2-fp32-test") == 16
    assert m["acc"]["value"] >= 0.6  # Paris, eight, blue, honey... a 135M model knows most
    calls = []
    monkeypatch.setattr(backend, "loglikelihood", lambda reqs, progress=None: calls.append(reqs) or [])
    second = evaluate(backend, ["quiz"], cache=cache, show_progress=False)
    assert calls == [] and second["tasks"]["quiz"]["metrics"] == m


def test_interrupted_run_resumes_from_committed_chunks(backend, quiz, tmp_path, monkeypatch):
    import groundup.eval.harness as harness

    monkeypatch.setattr(harness, "CHUNK", 4)
    cache = AnswerCache(tmp_path / "c.sqlite")
    real = backend.loglikelihood
    seen: list[int] = []

    def flaky(reqs, progress=lambda n: None):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(len(reqs))
        return real(reqs, progress)

    monkeypatch.setattr(backend, "loglikelihood", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate(backend, ["quiz"], cache=cache, show_progress=False)
    assert cache.count() == 8  # two chunks committed before the interrupt
    def counted(reqs, progress=None):
        seen.append(len(reqs))
        return real(reqs)

    monkeypatch.setattr(backend, "loglikelihood", counted)
    done = evaluate(backend, ["quiz"], cache=cache, show_progress=False)
    assert seen[2:] == [4, 4] and cache.count() == 16
    assert done["tasks"]["quiz"]["n"] == len(QUESTIONS)


def test_generate_requests_stop_and_sample_reproducibly(backend):
    greedy = Generate("Question: What is 2 + 3?\nAnswer:", until=("\n",), max_tokens=12)
    sampled = Generate("Once upon a time", max_tokens=10, n=3, temperature=1.0)
    a = backend.generate([greedy, sampled])
    b = backend.generate([greedy, sampled])
    assert a == b and isinstance(a[0], str) and "\n" not in a[0]
    assert len(a[1]) == 3 and len(set(a[1])) > 1  # seeded samples differ from each other, not between runs


def test_pass_at_k_equals_the_binomial_definition():
    for n in range(1, 12):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(comb(n - c, k), comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - comb(197, 100) / comb(200, 100))
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_mean_stderr_and_choice_metrics():
    m, se = mean_stderr([1.0, 0.0, 1.0, 1.0])
    assert m == 0.75 and se == pytest.approx((0.75 / 3 / 4) ** 0.5)  # sample variance / n
    # a long gold choice with a worse total wins once normalised by length (characters or bytes)
    s = score_choices([(-10.0, False), (-9.0, False)], ["a long answer here", "x"], 0)
    assert s == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    # characters and bytes differ for non-ASCII text: "ééé" is 3 characters but 6 bytes
    s = score_choices([(-5.0, False), (-2.6, False)], ["ééé", "ab"], 0)
    assert s == {"acc": 0.0, "acc_norm": 0.0, "acc_bytes": 1.0}
    s = score_choices([(-9.0, False), (-10.0, False)], ["a", "a much much longer answer"], 1)
    assert s["acc"] == 0.0 and s["acc_norm"] == 1.0


def test_report_files_and_compare(backend, quiz, tmp_path):
    from groundup.eval.report import compare, write_run

    res = evaluate(backend, ["quiz"], cache=None, show_progress=False)
    write_run(res, tmp_path / "a")
    res["model"] = "other"
    write_run(res, tmp_path / "b")
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["tasks"]["quiz"]["metrics"]["acc"]["value"] == res["tasks"]["quiz"]["metrics"]["acc"]["value"]
    assert (tmp_path / "a" / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "| quiz | acc |" in (tmp_path / "a" / "report.md").read_text()
    table = compare([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp.png")
    assert "other" in table and table.count("| quiz |") == 3 and (tmp_path / "cmp.png").exists()


@pytest.fixture(scope="module")
def shared_text():
    from pathlib import Path

    f = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
    if not f.exists():
        pytest.skip("../shared/data/tinyshakespeare is not present")
    return f.read_text()
