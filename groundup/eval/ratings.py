"""Ratings from pairwise battles: Bradley-Terry by maximum likelihood, bootstrap intervals, online Elo.

A battle is two models answering one prompt and a judge saying which answer was better. Each
battle has `model_a`, `model_b` and `winner`, one of:

- "model_a" / "model_b": that side won;
- "tie": both equally good; "tie (bothbad)": both bad. "Both bad" counts exactly like a tie here:
  it says the two were equal (at being bad), which is all a rating of the pair can use.

Bradley-Terry: P(i beats j) = 1 / (1 + exp(-(θ_i - θ_j))). The strengths θ maximise the
likelihood of the battles, where a tie counts as half a win for each side (as in the Chatbot
Arena notebook, which weighs wins twice and ties once). The solver is Newton's method on the
convex negative log-likelihood with a backtracking line search, plus a vanishingly weak ridge
(λ = 1e-6) that fixes the free additive constant (the fit comes out mean-zero) and keeps θ finite
when the maximum is at infinity, e.g. a model won every battle (it then gets a very large rating
instead of an infinite one; `mle_is_finite` tells these cases apart). Ratings are Elo points: 400/ln(10)·θ, so 400 points of difference mean 10:1 odds,
shifted so the anchor model has `anchor_rating` (or, without an anchor, so that the mean is
`anchor_rating`).

95% intervals: the battles are resampled with replacement `rounds` times (seeded); each resample is
refitted and the 2.5th / 97.5th percentiles of each model's rating are the interval. Resampling n
battles with replacement is the same as drawing the counts of each distinct (a, b, outcome) cell
from a multinomial, which is what is done, and all rounds are fitted together as one batch.

Online Elo: the classic sequential update in battle order, K = 4, base 10, scale 400, start 1000.
Unlike Bradley-Terry it depends on the order of the battles; it is shown for comparison.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Protocol, Sequence

import numpy as np

from groundup.errors import GroundupError

A_WINS, B_WINS, TIE, BOTH_BAD = "model_a", "model_b", "tie", "tie (bothbad)"
OUTCOMES = (A_WINS, B_WINS, TIE, BOTH_BAD)
ELO_PER_NAT = 400.0 / math.log(10.0)  # Elo points per unit of natural-log strength
RIDGE = 1e-6


class BattleLike(Protocol):
    model_a: str
    model_b: str
    winner: str


@dataclass(frozen=True)
class Row:
    """One model's line of the leaderboard."""
    model: str
    rating: float  # Bradley-Terry MLE, Elo points
    ci_low: float  # 95% bootstrap interval (nan without bootstrap)
    ci_high: float
    elo: float  # online Elo in battle order
    battles: int
    wins: int
    ties: int  # ties and "both bad"
    losses: int

    def as_dict(self) -> dict:
        return asdict(self)


def score_a(winner: str) -> float:
    """Side A's score in a battle: 1 win, 0 loss, 0.5 tie or both bad."""
    if winner == A_WINS:
        return 1.0
    if winner == B_WINS:
        return 0.0
    if winner in (TIE, BOTH_BAD):
        return 0.5
    raise GroundupError(f"unknown battle outcome {winner!r}; expected one of {', '.join(OUTCOMES)}")


def _encode(battles: Sequence[BattleLike]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Models (sorted) and per-battle index of A, index of B, A's score."""
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    index = {m: i for i, m in enumerate(models)}
    ia = np.array([index[b.model_a] for b in battles], dtype=np.int64)
    ib = np.array([index[b.model_b] for b in battles], dtype=np.int64)
    s = np.array([score_a(b.winner) for b in battles], dtype=np.float64)
    return models, ia, ib, s


def win_matrix(n_models: int, ia: np.ndarray, ib: np.ndarray, s: np.ndarray,
               counts: np.ndarray | None = None) -> np.ndarray:
    """W[..., i, j] = how often i beat j (a tie adds 1/2 each way); `counts` (R, battles) makes a batch."""
    c = np.ones((1, len(s))) if counts is None else np.atleast_2d(counts).astype(np.float64)
    w = np.zeros((c.shape[0], n_models * n_models))
    np.add.at(w.T, ia * n_models + ib, (c * s).T)
    np.add.at(w.T, ib * n_models + ia, (c * (1.0 - s)).T)
    w = w.reshape(c.shape[0], n_models, n_models)
    return w[0] if counts is None else w


def _objective(theta: np.ndarray, w: np.ndarray, ridge: float) -> np.ndarray:
    d = theta[:, :, None] - theta[:, None, :]
    # -log sigmoid(d) = log(1 + exp(-d)), computed stably
    return (w * np.logaddexp(0.0, -d)).sum(axis=(1, 2)) + 0.5 * ridge * (theta ** 2).sum(axis=1)


def fit_bradley_terry(w: np.ndarray, ridge: float = RIDGE, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Natural-log strengths θ maximising the Bradley-Terry likelihood of win matrix w.

    w: (K, K) or a batch (R, K, K). Returns θ of shape (K,) or (R, K), mean-zero within each
    connected group of models; models without a battle get nan.
    """
    single = w.ndim == 2
    w = np.asarray(w, dtype=np.float64)[None] if single else np.asarray(w, dtype=np.float64)
    r, k, _ = w.shape
    n = w + w.transpose(0, 2, 1)
    theta = np.zeros((r, k))
    f = _objective(theta, w, ridge)
    eye, diag = np.eye(k), np.arange(k)
    active = np.ones(r, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th, wa, na = theta[idx], w[idx], n[idx]
        p = 1.0 / (1.0 + np.exp(-(th[:, :, None] - th[:, None, :])))  # p[i, j] = P(i beats j)
        grad = (wa - na * p).sum(axis=2) - ridge * th  # gradient of the log-likelihood (+ prior)
        lap = na * p * (1.0 - p)
        hess = ridge * eye - lap  # Hessian of the objective: the graph Laplacian of lap, plus the ridge
        hess[:, diag, diag] += lap.sum(axis=2)
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        t = np.ones(idx.size)
        f0 = f[idx]
        slope = -(grad * step).sum(axis=1)  # directional derivative of the objective (negative)
        for _ in range(40):  # backtracking (Armijo); all rounds at once
            f_new = _objective(th + t[:, None] * step, wa, ridge)
            bad = f_new > f0 + 1e-4 * t * slope
            if not bad.any():
                break
            t = np.where(bad, t * 0.5, t)
        theta[idx] = th + t[:, None] * step
        f[idx] = _objective(theta[idx], wa, ridge)
        done = np.abs(t[:, None] * step).max(axis=1) < tol
        active[idx[done]] = False
    played = n.sum(axis=2) > 0
    theta = np.where(played, theta, np.nan)
    return theta[0] if single else theta


def to_elo(theta: np.ndarray, models: Sequence[str], anchor: str | None = None,
           anchor_rating: float = 1000.0) -> np.ndarray:
    """Strengths -> Elo points, with the anchor model at anchor_rating (no anchor: the mean is)."""
    elo = ELO_PER_NAT * np.asarray(theta, dtype=np.float64)
    if anchor is not None:
        ref = elo[..., list(models).index(anchor)]
    else:
        ref = np.nanmean(elo, axis=-1)
    return elo - np.asarray(ref)[..., None] + anchor_rating if elo.ndim > 1 else elo - ref + anchor_rating


def bradley_terry(battles: Sequence[BattleLike], anchor: str | None = None,
                  anchor_rating: float = 1000.0) -> dict[str, float]:
    """Model -> Bradley-Terry rating in Elo points (maximum likelihood on all battles)."""
    models, ia, ib, s = _encode(_check(battles, anchor))
    theta = fit_bradley_terry(win_matrix(len(models), ia, ib, s))
    return dict(zip(models, to_elo(theta, models, anchor, anchor_rating).tolist()))


def bootstrap_ratings(battles: Sequence[BattleLike], rounds: int = 1000, seed: int = 0,
                      anchor: str | None = None, anchor_rating: float = 1000.0,
                      batch: int = 250) -> tuple[list[str], np.ndarray]:
    """(models, ratings of shape (rounds, models)): Bradley-Terry on `rounds` resamples of the battles."""
    models, ia, ib, s = _encode(_check(battles, anchor))
    # distinct (a, b, score) cells and how many battles fall in each
    keys = np.stack([ia, ib, (s * 2).astype(np.int64)], axis=1)
    cells, counts = np.unique(keys, axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(battles), counts / counts.sum(), size=rounds)
    out = []
    for start in range(0, rounds, batch):
        w = win_matrix(len(models), cells[:, 0], cells[:, 1], cells[:, 2] / 2.0, draws[start:start + batch])
        out.append(to_elo(fit_bradley_terry(w), models, anchor, anchor_rating))
    return models, np.concatenate(out) if out else np.zeros((0, len(models)))


def mle_is_finite(battles: Sequence[BattleLike]) -> bool:
    """Whether the Bradley-Terry maximum exists (Ford's condition).

    It does when, however the models are split into two groups, some model of each group beat or
    tied some model of the other: the graph "i beat or tied j" is strongly connected. Otherwise
    (one model won every battle, or two groups never met) the likelihood keeps growing as the
    groups move apart, and the ratings between them only say "far apart".
    """
    models, ia, ib, s = _encode(_check(battles, None))
    beat = win_matrix(len(models), ia, ib, s) > 0

    def reaches_all(adj: np.ndarray) -> bool:
        seen, frontier = {0}, [0]
        while frontier:
            nxt = [j for i in frontier for j in np.flatnonzero(adj[i]) if j not in seen]
            seen.update(nxt)
            frontier = nxt
        return len(seen) == len(models)

    return reaches_all(beat) and reaches_all(beat.T)


def online_elo(battles: Iterable[BattleLike], k: float = 4.0, base: float = 10.0, scale: float = 400.0,
               initial: float = 1000.0) -> dict[str, float]:
    """Sequential Elo in battle order: after each battle, R_a += K (S_a - E_a), R_b likewise."""
    rating: dict[str, float] = {}
    for b in battles:
        ra, rb = rating.setdefault(b.model_a, initial), rating.setdefault(b.model_b, initial)
        expected_a = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        sa = score_a(b.winner)
        rating[b.model_a] = ra + k * (sa - expected_a)
        rating[b.model_b] = rb + k * ((1.0 - sa) - (1.0 - expected_a))
    return rating


def leaderboard(battles: Sequence[BattleLike], anchor: str | None = None, anchor_rating: float = 1000.0,
                bootstrap: int = 1000, seed: int = 0, k: float = 4.0) -> list[Row]:
    """One Row per model, best Bradley-Terry rating first."""
    battles = _check(battles, anchor)
    ratings = bradley_terry(battles, anchor, anchor_rating)
    elo = online_elo(battles, k=k)
    lo = hi = {m: math.nan for m in ratings}
    if bootstrap > 0:
        models, boot = bootstrap_ratings(battles, bootstrap, seed, anchor, anchor_rating)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a model absent from every resample: nan
            q = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        lo, hi = dict(zip(models, q[0].tolist())), dict(zip(models, q[1].tolist()))
    tally = {m: [0, 0, 0] for m in ratings}  # wins, ties, losses
    for b in battles:
        sa = score_a(b.winner)
        for model, s in ((b.model_a, sa), (b.model_b, 1.0 - sa)):
            tally[model][0 if s == 1.0 else 1 if s == 0.5 else 2] += 1
    rows = [Row(m, ratings[m], lo[m], hi[m], elo[m], sum(tally[m]), *tally[m]) for m in ratings]
    return sorted(rows, key=lambda r: (-r.rating, r.model))


def _check(battles: Sequence[BattleLike], anchor: str | None) -> Sequence[BattleLike]:
    if len(battles) == 0:
        raise GroundupError("no battles to rate; vote in the web chat's Arena tab or give a JSONL of battles")
    for i, b in enumerate(battles):
        if b.model_a == b.model_b:
            raise GroundupError(f"battle {i + 1} pits {b.model_a!r} against itself; a battle needs two models")
        score_a(b.winner)
    if anchor is not None:
        names = {b.model_a for b in battles} | {b.model_b for b in battles}
        if anchor not in names:
            raise GroundupError(f"anchor model {anchor!r} is in no battle; models: {', '.join(sorted(names))}")
    return battles
