"""Evaluation: tasks, the harness that runs them against any LLM, and the sandbox for generated code."""
