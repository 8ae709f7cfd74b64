"""groundup: an LLM system built from the ground up in Python.

Public entry points: `load_model`, `ModelConfig`, `Tokenizer`, `Engine`,
`SamplingParams`.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["ModelConfig", "load_model", "Tokenizer", "Engine", "SamplingParams", "GroundupError"]


def __getattr__(name: str):  # lazy: `import groundup` stays cheap (no torch import)
    if name == "ModelConfig":
        from groundup.config import ModelConfig
        return ModelConfig
    if name == "load_model":
        from groundup.models import load_model
        return load_model
    if name == "Tokenizer":
        from groundup.tokenizer.tokenizer import Tokenizer
        return Tokenizer
    if name == "Engine":
        from groundup.engine.engine import Engine
        return Engine
    if name == "SamplingParams":
        from groundup.engine.sampling import SamplingParams
        return SamplingParams
    if name == "GroundupError":
        from groundup.errors import GroundupError
        return GroundupError
    raise AttributeError(name)
