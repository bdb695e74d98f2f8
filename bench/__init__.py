"""Benchmarks of the model, the train step, the metrics and the memory plan.

Each is run from the repository root as a module, e.g. `python -m bench.train_step --help`; docs/benchmarks.md
lists them with their commands and last results. Shared pieces live in `bench.common`.
"""
