"""Runners for the Ray kill tests, named in test grids as `tests.helpers.ray_runner:fake` or `:real`.

Each first writes its process id to cell_dir/worker.pid, so a test can SIGKILL the Ray worker that runs
the cell, then runs the cell: `fake` with tests/helpers/fake_runner.py (progress.json resume), `real`
with harness.cell.run_cell.run_cell (orbax checkpoint resume).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.helpers import fake_runner


def _mark(cell_dir: Path) -> None:
    tmp = Path(cell_dir) / "worker.pid.tmp"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, Path(cell_dir) / "worker.pid")


def fake(cell: Any, cell_dir: Path) -> dict:
    _mark(cell_dir)
    return fake_runner.run(cell, cell_dir)


def real(cell: Any, cell_dir: Path) -> dict:
    from harness.cell.run_cell import run_cell

    _mark(cell_dir)
    return run_cell(cell, cell_dir, progress=False)


def _check(cell: Any) -> None:
    from harness.cell.memory_check import check_cell

    check_cell(cell)


# Both carry the default runner's memory check, as run_cell does (harness/run/scheduler.py calls it).
fake.check = _check
real.check = _check
