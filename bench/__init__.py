"""Benchmarks behind `make bench`. Each module has `run(cfg) -> dict` and prints its figures."""
