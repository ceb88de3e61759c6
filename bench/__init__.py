"""Benchmarks of `release`: `python -m bench` (see bench/run.py and docs/development.md)."""
