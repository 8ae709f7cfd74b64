"""schemathesis against the server's own OpenAPI document: no input makes it answer 5xx."""
from __future__ import annotations

import pytest

from tests.serving import live_server

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def base(smollm2_path):
    with live_server("--model", "smollm2-135m-instruct", "--max-len", "256", "--max-output-tokens", "8",
                     "--max-batch", "4", "--max-queue", "64") as (url, _):
        yield url


def test_no_server_errors(base):
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    failures = []
    ops = 0
    for result in schema.get_all_operations():
        op = result.ok()
        ops += 1
        strategy = op.as_strategy()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=strategy)
        def check(case):
            r = case.call(base_url=base, timeout=60)
            if r.status_code >= 500:
                failures.append((case.method, case.path, r.status_code, r.text[:200]))

        check()
    assert ops >= 8  # every endpoint was exercised
    assert not failures, failures[:5]
