"""A NaN or infinite eval metric is never recorded as a result: the cell fails in one line, no record."""

from __future__ import annotations

import pytest

from harness.run.grid import load_grid
from harness.run.scheduler import RunError, run_grid

GRID = """\
name: nan
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
data_root: {data}
checkpoints: random
runner: tests.test_non_finite_metrics:nan_runner
"""


def nan_runner(cell, cell_dir) -> dict:
    return {"metrics": {"accuracy": float("nan")}, "headline": "accuracy", "steps": 1}


def test_a_nan_metric_fails_the_cell_without_a_record(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_MEMORY_CHECK", "0")
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data"))
    with pytest.raises(RunError, match=r"the runner's metrics \{'accuracy': nan\} are not finite numbers"):
        run_grid(load_grid(path), tmp_path / "w", progress=False)
    assert not list((tmp_path / "w" / "records").glob("*.json"))
