"""Shared fixtures: paths of the pulled reference models (skip when not pulled)."""
from __future__ import annotations

from pathlib import Path

import pytest


def model_path(name: str) -> Path:
    from groundup.registry import cached_path

    p = cached_path(name)
    if p is None:
        pytest.skip(f"model {name} is not pulled; run `groundup pull {name}` (make test does this)")
    return p


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return model_path("gemma3-270m")


def llama_cpp_or_skip():
    """Import llama_cpp (the reference), or skip the test with the reason."""
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make install-ref)")
