"""pass@k: the unbiased estimator of the chance that at least one of k samples passes.

With n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al.,
2021, the HumanEval paper). The binomials overflow floats for large n, so it is
computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which is the same
number and stays in [0, 1].
"""
from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem (got {n})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod
