"""Benchmarks of the engine: `make bench` (python -m bench.run). See docs/performance.md."""
