"""Benchmarks, run side by side with peers; they print ratios."""
