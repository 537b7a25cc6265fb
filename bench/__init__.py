"""Benchmarks: ratios against a bare baseline measured in the same run (see RESULTS.md)."""
