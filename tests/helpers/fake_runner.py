"""A fast stand-in for harness.cell.run_cell:run_cell, named in test grids as `tests.helpers.fake_runner:run`.

It "trains" STEPS steps, sleeping a little and saving its step in cell_dir/progress.json after each,
resumes from that file when called again, appends "start <id> <from_step> <pid>" and "done <id>" to
workdir/runner.log (so tests can count runs), writes predictions.jsonl, and returns metrics that
are a fixed function of the cell's fields (so an interrupted and an uninterrupted run agree).
Sleeps come from the environment so a kill test can widen its windows. A cell folder in a bucket
(gs://...: a remote workdir) is reached through results/paths.py, as the real runner's files are.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from results.paths import AnyPath, append_text, as_path, is_remote, write_text

STEPS = 5
SIZE_GAIN = {"nano-s": 0.0, "nano-m": 0.10, "nano-l": 0.12}
RES_GAIN = {32: 0.0, 64: 0.04, 128: 0.06}
BEST_LR = {"nano-s": 1e-3, "nano-m": 1e-4, "nano-l": 1e-4}


def log_path(cell_dir: str | os.PathLike) -> AnyPath:
    return as_path(cell_dir).parent.parent / "runner.log"


def score(cell: Any) -> float:
    """Peaks at BEST_LR[size]; grows with size and resolution; seeds differ a little."""
    lr_penalty = 0.05 * abs(math.log10(cell.lr) - math.log10(BEST_LR[cell.size]))
    return round(0.5 + SIZE_GAIN[cell.size] + RES_GAIN[cell.resolution] - lr_penalty + 0.01 * cell.seed, 6)


def _log(cell_dir: str | os.PathLike, line: str) -> None:
    append_text(log_path(cell_dir), line + "\n")


def _save_step(progress: AnyPath, step: int) -> None:
    """The step reached, replaced atomically (one object write in a bucket)."""
    if is_remote(progress):
        write_text(progress, json.dumps({"step": step}))
        return
    tmp = progress.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step}))
    os.replace(tmp, progress)


def run(cell: Any, cell_dir: Path) -> dict:
    start_s = float(os.environ.get("FAKE_RUNNER_START_S", "0"))
    step_s = float(os.environ.get("FAKE_RUNNER_STEP_S", "0.002"))
    progress = as_path(cell_dir) / "progress.json"
    step = json.loads(progress.read_text())["step"] if progress.exists() else 0
    time.sleep(start_s)
    _log(cell_dir, f"start {cell.cell_id} {step} {os.getpid()}")
    first = step
    while step < STEPS:
        time.sleep(step_s)
        step += 1
        _save_step(progress, step)
    value = score(cell)
    write_text(as_path(cell_dir) / "predictions.jsonl", json.dumps({"id": "0", "prediction": value}) + "\n")
    _log(cell_dir, f"done {cell.cell_id}")
    return {"metrics": {"accuracy": value, "loss": 1.0 - value}, "headline": "accuracy", "steps": STEPS,
            "resumed_from": first}


def run_failing_nano_m(cell: Any, cell_dir: Path) -> dict:
    """Like `run`, but every nano-m cell raises: for the scheduler's failure handling."""
    if cell.size == "nano-m":
        raise RuntimeError(f"simulated failure in {cell.cell_id}")
    return run(cell, cell_dir)


def run_with_state(cell: Any, cell_dir: Path) -> dict:
    """Like `run`, and leaves what the real runner leaves: a training checkpoint (ckpt/) and, when the
    grid keeps them, the fine-tuned params (params.npz)."""
    (Path(cell_dir) / "ckpt").mkdir(exist_ok=True)
    (Path(cell_dir) / "ckpt" / "state").write_bytes(b"x" * 100)
    if getattr(cell, "keep_checkpoints", "none") != "none":
        (Path(cell_dir) / "params.npz").write_bytes(b"p" * 10)
    return run(cell, cell_dir)


def run_predictions_enospc(cell: Any, cell_dir: Path) -> dict:
    """Like `run`, but writing the predictions fails with "no space left on device" while
    FAKE_RUNNER_ENOSPC is set."""
    import errno

    from harness.cell import evaluate

    if os.environ.get("FAKE_RUNNER_ENOSPC"):
        real_fdopen = os.fdopen

        class Full:
            """The file object of the project's atomic writer (results.store.atomic_write_text), full
            after half of the first write."""

            def __init__(self, *a, **k):
                self.f = real_fdopen(*a, **k)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, text):
                self.f.write(text[: len(text) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.fdopen = Full  # what atomic_write_text opens its temp file with
        try:
            evaluate.write_jsonl(Path(cell_dir) / "predictions.jsonl", [{"id": "0", "prediction": "x"}])
        finally:
            os.fdopen = real_fdopen
    return run(cell, cell_dir)


def checked_run(cell: Any, cell_dir: Path) -> dict:
    """`run` with the default runner's memory check (a runner provides its own check, or none)."""
    return run(cell, cell_dir)


def _check(cell: Any) -> None:
    from harness.cell.memory_check import check_cell

    check_cell(cell)


checked_run.check = _check
