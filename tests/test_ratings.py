"""Arena ratings (eval/ratings.py) and battle files / vote store (eval/arena.py).

Bradley-Terry is checked against two independent fits of the same likelihood: scikit-learn's
LogisticRegression (no intercept, C = 1e8: negligible regularisation; the Chatbot Arena notebook's
method) and scipy.optimize on the log-likelihood written out, on battles drawn from known strengths.
"""
from __future__ import annotations

import argparse
import json
import math
import sqlite3

import numpy as np
import pytest

from groundup.errors import GroundupError
from groundup.eval.arena import Battle, VoteStore, add_arena_arguments, arena_command, read_battles, read_jsonl
from groundup.eval.ratings import (ELO_PER_NAT, bootstrap_ratings, bradley_terry, leaderboard, mle_is_finite,
                                   online_elo)

HALF_WIN_RULE = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}  # A's share of a win
TRUE_THETA = {"m0": 0.0, "m1": 0.6, "m2": 1.1, "m3": -0.8, "m4": 0.25, "m5": -0.3}


def synthetic(n: int, seed: int, tie_rate: float = 0.0, theta: dict | None = None) -> list[Battle]:
    """n battles between random pairs; A wins with the Bradley-Terry probability; some ties / both-bad."""
    theta = theta or TRUE_THETA
    names = sorted(theta)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        u = rng.random()
        if u < tie_rate:
            winner = "tie" if rng.random() < 0.5 else "tie (bothbad)"
        else:
            p = 1.0 / (1.0 + math.exp(-(theta[a] - theta[b])))
            winner = "model_a" if rng.random() < p else "model_b"
        out.append(Battle(a, b, winner))
    return out


def _pair_weights(battles: list[Battle], names: list[str]) -> list[tuple[int, int, float, float]]:
    """(i, j, weight of i beating j, weight of j beating i) per unordered pair; a tie is 1/2 each way."""
    idx = {m: k for k, m in enumerate(names)}
    w: dict[tuple[int, int], list[float]] = {}
    for b in battles:
        i, j, s = idx[b.model_a], idx[b.model_b], HALF_WIN_RULE[b.winner]
        if i > j:
            i, j, s = j, i, 1.0 - s
        cell = w.setdefault((i, j), [0.0, 0.0])
        cell[0] += s
        cell[1] += 1.0 - s
    return [(i, j, wij, wji) for (i, j), (wij, wji) in sorted(w.items())]


def _to_elo(theta: np.ndarray, names: list[str], anchor: str | None = None, rating: float = 1000.0) -> dict:
    elo = ELO_PER_NAT * theta
    ref = elo[names.index(anchor)] if anchor else elo.mean()
    return {m: float(e - ref + rating) for m, e in zip(names, elo)}


def sklearn_reference(battles: list[Battle], anchor: str | None = None, rating: float = 1000.0) -> dict:
    lm = pytest.importorskip("sklearn.linear_model", reason="scikit-learn not installed (pip install scikit-learn)")
    names = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    rows, ys, weights = [], [], []
    for i, j, wij, wji in _pair_weights(battles, names):
        x = np.zeros(len(names))
        x[i], x[j] = 1.0, -1.0
        rows += [x, x]
        ys += [1, 0]
        weights += [wij, wji]
    fit = lm.LogisticRegression(fit_intercept=False, C=1e8, tol=1e-12, max_iter=100_000)
    fit.fit(np.array(rows), np.array(ys), sample_weight=np.array(weights))
    return _to_elo(fit.coef_[0], names, anchor, rating)


def scipy_reference(battles: list[Battle]) -> dict:
    opt = pytest.importorskip("scipy.optimize", reason="scipy not installed")
    names = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    pairs = np.array(_pair_weights(battles, names))
    i, j, wij, wji = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2], pairs[:, 3]

    def nll(free):  # theta[0] fixed at 0; log sigmoid(d) = -log(1 + e^-d)
        theta = np.concatenate([[0.0], free])
        d = theta[i] - theta[j]
        return float((wij * np.logaddexp(0, -d) + wji * np.logaddexp(0, d)).sum())

    res = opt.minimize(nll, np.zeros(len(names) - 1), method="BFGS", options={"gtol": 1e-9})
    return _to_elo(np.concatenate([[0.0], res.x]), names)


def test_bradley_terry_equals_sklearn_and_scipy_fits():
    battles = synthetic(3000, seed=1, tie_rate=0.15)
    assert {b.winner for b in battles} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    ours = bradley_terry(battles)
    for ref in (sklearn_reference(battles), scipy_reference(battles)):
        assert ref.keys() == ours.keys()
        diffs = {m: abs(ours[m] - ref[m]) for m in ours}
        assert max(diffs.values()) < 1.0, diffs
    # the ratings really are spread out (the check above is not trivially satisfied by equal ratings)
    assert max(ours.values()) - min(ours.values()) > 200

    anchored = bradley_terry(battles, anchor="m3", anchor_rating=1200.0)
    ref = sklearn_reference(battles, anchor="m3", rating=1200.0)
    assert anchored["m3"] == pytest.approx(1200.0)
    assert max(abs(anchored[m] - ref[m]) for m in ref) < 1.0


def test_small_unbalanced_set_matches_reference():
    # few battles, uneven pairs, one model seen only twice: still the same maximum
    battles = synthetic(60, seed=7, tie_rate=0.1, theta={"a": 0.0, "b": 0.4, "c": -0.5, "d": 0.9})
    battles += [Battle("a", "e", "model_b"), Battle("e", "b", "model_b")]
    ours, ref = bradley_terry(battles), sklearn_reference(battles)
    assert max(abs(ours[m] - ref[m]) for m in ref) < 1.0


def test_ties_and_both_bad_count_as_half_a_win_each_way():
    only_ties = [Battle("x", "y", "tie")] * 5 + [Battle("y", "x", "tie (bothbad)")] * 5
    r = bradley_terry(only_ties)
    assert r["x"] == pytest.approx(r["y"], abs=1e-6)
    # one win + one tie is the same evidence as 1.5 wins out of 2 under the half-win rule
    mixed = bradley_terry([Battle("x", "y", "model_a"), Battle("x", "y", "tie"), Battle("y", "z", "model_a"),
                           Battle("z", "y", "model_a")])
    mixed_bad = bradley_terry([Battle("x", "y", "model_a"), Battle("x", "y", "tie (bothbad)"),
                               Battle("y", "z", "model_a"), Battle("z", "y", "model_a")])
    assert mixed == pytest.approx(mixed_bad)
    assert mixed["x"] - mixed["y"] == pytest.approx(400 * math.log10(3), abs=1e-3)  # P = 3/4 -> odds 3:1


def test_a_model_that_won_everything_gets_a_finite_top_rating():
    battles = [Battle("champ", "b", "model_a")] * 4 + [Battle("c", "champ", "model_b")] * 4 + \
              synthetic(40, seed=3, theta={"b": 0.0, "c": 0.3})
    r = bradley_terry(battles)
    assert all(math.isfinite(v) for v in r.values())
    assert r["champ"] > max(r["b"], r["c"]) + 400


def test_mle_is_finite_exactly_when_no_group_of_models_beat_all_others():
    x_beats_y = [Battle("x", "y", "model_a")] * 3
    assert not mle_is_finite(x_beats_y)
    assert mle_is_finite(x_beats_y + [Battle("x", "y", "model_b")])
    assert mle_is_finite([Battle("x", "y", "tie (bothbad)")])
    cycle = [Battle("x", "y", "model_a"), Battle("y", "z", "model_a"), Battle("z", "x", "model_a")]
    assert mle_is_finite(cycle)
    assert not mle_is_finite(cycle[:2])  # x > y > z and nothing back: x's group beat everyone
    two_islands = [Battle("x", "y", "model_a"), Battle("y", "x", "model_a"),
                   Battle("p", "q", "model_a"), Battle("q", "p", "model_a")]
    assert not mle_is_finite(two_islands)
    assert mle_is_finite(synthetic(500, seed=1))
    # where it is finite, a hundredfold weaker ridge changes nothing; where not, the rating runs off
    from groundup.eval.ratings import _encode, fit_bradley_terry, win_matrix

    for battles, finite in ((cycle + cycle[:1], True), (cycle[:2], False)):
        models, ia, ib, s = _encode(battles)
        w = win_matrix(len(models), ia, ib, s)
        gap = np.ptp(fit_bradley_terry(w, ridge=1e-8)) - np.ptp(fit_bradley_terry(w))
        assert (abs(gap) < 1e-4) == finite, (finite, gap)


def test_bootstrap_interval_contains_truth_and_narrows_with_data():
    theta = {"a": 0.0, "b": 0.5, "c": -0.4, "d": 0.9}
    truth = _to_elo(np.array([theta[m] for m in sorted(theta)]), sorted(theta))
    widths = {}
    for n in (1500, 12000):
        rows = leaderboard(synthetic(n, seed=11, theta=theta), bootstrap=400, seed=0)
        for r in rows:
            assert r.ci_low < r.rating < r.ci_high
            assert r.ci_low <= truth[r.model] <= r.ci_high, (n, r, truth[r.model])
        widths[n] = np.mean([r.ci_high - r.ci_low for r in rows])
    assert widths[12000] < 0.6 * widths[1500]  # ~1/sqrt(8) = 0.35 expected
    # seeded: the same seed gives the same intervals, another seed different ones
    battles = synthetic(500, seed=2, theta=theta)
    _, b1 = bootstrap_ratings(battles, rounds=50, seed=5)
    _, b2 = bootstrap_ratings(battles, rounds=50, seed=5)
    _, b3 = bootstrap_ratings(battles, rounds=50, seed=6)
    assert np.array_equal(b1, b2) and not np.array_equal(b1, b3)


def test_online_elo_matches_hand_computation():
    battles = [Battle("x", "y", "model_a"), Battle("y", "z", "tie"), Battle("z", "x", "model_a")]
    got = online_elo(battles)
    # by hand, K = 4, E_a = 1 / (1 + 10^((R_b - R_a) / 400)):
    x, y, z = 1000.0, 1000.0, 1000.0
    x, y = x + 4 * (1 - 0.5), y + 4 * (0 - 0.5)  # equal ratings: E = 1/2 -> 1002, 998
    e_y = 1 / (1 + 10 ** ((z - y) / 400))  # 998 vs 1000 tie: y expected just under 1/2
    y, z = y + 4 * (0.5 - e_y), z + 4 * (0.5 - (1 - e_y))
    e_z = 1 / (1 + 10 ** ((x - z) / 400))
    z, x = z + 4 * (1 - e_z), x + 4 * (0 - (1 - e_z))
    assert got == pytest.approx({"x": x, "y": y, "z": z}, abs=1e-9)
    assert got["y"] == pytest.approx(998.0115, abs=1e-4)
    assert sum(got.values()) == pytest.approx(3000.0)  # Elo is zero-sum


def test_leaderboard_rows_count_battles():
    battles = [Battle("p", "q", "model_a"), Battle("q", "p", "tie (bothbad)"), Battle("r", "p", "model_a"),
               Battle("q", "r", "model_b"), Battle("p", "q", "tie")]
    rows = {r.model: r for r in leaderboard(battles, bootstrap=50)}
    assert (rows["p"].wins, rows["p"].ties, rows["p"].losses, rows["p"].battles) == (1, 2, 1, 4)
    assert (rows["q"].wins, rows["q"].ties, rows["q"].losses, rows["q"].battles) == (0, 2, 2, 4)
    assert (rows["r"].wins, rows["r"].ties, rows["r"].losses, rows["r"].battles) == (2, 0, 0, 2)
    ordered = leaderboard(battles, bootstrap=0)
    assert [r.rating for r in ordered] == sorted((r.rating for r in ordered), reverse=True)
    assert all(math.isnan(r.ci_low) for r in ordered)
    with pytest.raises(GroundupError, match="anchor model 'nope'"):
        leaderboard(battles, anchor="nope")
    with pytest.raises(GroundupError, match="no battles"):
        leaderboard([])


def _write(path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_jsonl_reading_and_one_line_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    _write(good, ['{"model_a": "x", "model_b": "y", "winner": "model_a", "tstamp": 5, "extra": 1}', "",
                  '{"model_a": "y", "model_b": "x", "winner": "B"}',
                  '{"model_a": "x", "model_b": "y", "winner": "bad", "prompt": "hi"}'])
    battles = read_jsonl(good)
    assert [b.winner for b in battles] == ["model_a", "model_b", "tie (bothbad)"]
    assert battles[0].tstamp == 5.0 and battles[2].prompt == "hi"

    cases = [
        ('{"model_a": "x", "model_b": "y", "winner": "model_a"', "not valid JSON"),
        ('{"model_a": "x", "winner": "model_a"}', "missing key 'model_b'"),
        ('{"model_a": "x", "model_b": "y", "winner": "draw"}', "winner 'draw'"),
        ('{"model_a": "x", "model_b": "x", "winner": "tie"}', "two different models"),
        ('["x", "y", "tie"]', "expected a JSON object"),
    ]
    for bad, why in cases:
        path = tmp_path / "bad.jsonl"
        _write(path, ['{"model_a": "x", "model_b": "y", "winner": "tie"}', "", bad])
        with pytest.raises(GroundupError) as e:
            read_jsonl(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}:3: ") and why in msg and "\n" not in msg, msg
    with pytest.raises(GroundupError, match="no battles file"):
        read_battles(tmp_path / "absent.jsonl")


def test_vote_store_is_atomic_wal_and_counts_a_battle_once(tmp_path):
    db = tmp_path / "sub" / "arena.sqlite"
    store = VoteStore(db)
    assert store.battles() == [] and not db.exists()  # reading creates nothing
    assert store.add(Battle("x", "y", "model_a", id="b1", prompt="p", answer_a="1", answer_b="2", tstamp=1.0))
    assert store.add(Battle("y", "x", "tie", id="b2", tstamp=2.0))
    assert not store.add(Battle("y", "x", "model_b", id="b1", tstamp=3.0))  # a second vote on b1 is refused
    got = store.battles()
    assert [(b.id, b.winner) for b in got] == [("b1", "model_a"), ("b2", "tie")]
    assert got[0].answer_b == "2"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError):  # the schema refuses outcomes that are not votes
            conn.execute("INSERT INTO votes (id, model_a, model_b, winner, tstamp) VALUES ('z', 'x', 'y', 'draw', 0)")
    assert [b.id for b in read_battles(db)] == ["b1", "b2"]  # read_battles recognises the SQLite file


def test_arena_command_prints_and_writes_json_and_png(tmp_path, capsys):
    battles = synthetic(400, seed=4, tie_rate=0.1, theta={"alpha": 0.0, "beta": 0.7, "gamma": -0.5})
    path = tmp_path / "battles.jsonl"
    _write(path, [json.dumps({"model_a": b.model_a, "model_b": b.model_b, "winner": b.winner}) for b in battles])
    parser = argparse.ArgumentParser()
    add_arena_arguments(parser)
    out_json, out_png = tmp_path / "out" / "lb.json", tmp_path / "lb.png"
    args = parser.parse_args(["--battles", str(path), "--anchor", "alpha", "--anchor-rating", "1100",
                              "--bootstrap", "100", "--seed", "3", "--json", str(out_json), "--png", str(out_png)])
    assert arena_command(args) == 0
    printed = capsys.readouterr().out
    assert "beta" in printed and "400 battles" in printed
    report = json.loads(out_json.read_text())
    expected = leaderboard(battles, anchor="alpha", anchor_rating=1100, bootstrap=100, seed=3)
    assert [m["model"] for m in report["models"]] == [r.model for r in expected] == ["beta", "alpha", "gamma"]
    assert report["models"][0]["rating"] == pytest.approx(expected[0].rating)
    assert report["models"][0]["ci_low"] == pytest.approx(expected[0].ci_low)
    assert next(m for m in report["models"] if m["model"] == "alpha")["rating"] == pytest.approx(1100)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob("*.partial"))

    args = parser.parse_args(["--battles", str(path), "--anchor", "delta"])
    with pytest.raises(GroundupError, match="anchor model 'delta' is in no battle"):
        arena_command(args)


def test_a_json_array_of_battles_is_read_too(tmp_path):
    path = tmp_path / "clean_battle.json"
    path.write_text(json.dumps([{"model_a": "x", "model_b": "y", "winner": "tie (bothbad)", "anony": True},
                                {"model_a": "y", "model_b": "x", "winner": "model_b"}], indent=1))
    assert [(b.model_a, b.winner) for b in read_battles(path)] == [("x", "tie (bothbad)"), ("y", "model_b")]
    path.write_text(json.dumps([{"model_a": "x", "model_b": "y", "winner": "tie"}, {"model_a": "x"}]))
    with pytest.raises(GroundupError, match=r"battle 2 of the array: missing key 'model_b'"):
        read_battles(path)
