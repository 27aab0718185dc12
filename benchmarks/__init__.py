"""Benchmarks: `python -m benchmarks.run` prints records per CPU-second and peak memory per case."""
