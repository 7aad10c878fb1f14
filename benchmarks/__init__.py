"""Benchmarks: bxbatch against the naive ways, on the same generated data, in one run (see RESULTS.md)."""
