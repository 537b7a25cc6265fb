"""Benchmarks: each module has `main()`; `python -m bench` runs them all (make bench).

Ratios against a bare baseline measured in the same run; see RESULTS.md.
"""
