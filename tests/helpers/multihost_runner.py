"""A runner for multi-host fault tests: every process joins one collective per cell (as a real cell's
steps do); MULTIHOST_FAULT=raise:<process> or kill:<process> makes that process raise, or SIGKILL itself,
in the first cell it runs. Process 0 logs each start to workdir/runner.log."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import jax
import numpy as np


def run(cell: Any, cell_dir: Path) -> dict:
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        with open(Path(cell_dir).parents[1] / "runner.log", "a", encoding="utf-8") as f:
            f.write(f"start {cell.cell_id}\n")
    mode, _, process = os.environ.get("MULTIHOST_FAULT", "").partition(":")
    if mode and process == str(jax.process_index()):
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"disk of {cell.cell_id} unreadable on this host only")
    total = multihost_utils.process_allgather(np.ones(1, np.float32))
    return {"metrics": {"accuracy": float(np.sum(total)) * cell.lr}, "headline": "accuracy", "steps": 1}
