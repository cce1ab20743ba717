"""Runnable cost and leakage benchmarks; each writes JSON (and CSV/PNG where useful).

Speed and memory targets live here, not in timed tests: a benchmark measures a ratio
against a baseline in the same run, because these machines are noisy.
"""
