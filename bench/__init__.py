"""Benchmarks: each module with a `run(group)` returns rows for `make bench`'s table."""
