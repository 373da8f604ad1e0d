"""Fuzzing as a test: Hypothesis strategies and the properties the suite and bench/bench_fuzz.py share."""
