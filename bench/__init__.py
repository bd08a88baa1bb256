"""Benchmarks and fault experiments run against real node processes."""
