"""The Ray backend on a local cluster (ray.init with 2 CPUs): a worker SIGKILLed mid-cell is retried, the
retry resumes from what the cell left on disk, and the records equal those of a run without the kill;
nothing is lost and nothing is recorded twice. Ray is in the `[test]` extra; skipped when it is not installed.

Starting the local cluster takes 5-25 s here, so both tests share one; the one through the real cell
runner (orbax checkpoints) is marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.run.grid import load_grid
from harness.run.scheduler import run_grid
from harness.run.workdir import cell_dir
from results.store import load_records

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]

# Workers are forked by the raylet, which inherits the driver's environment at ray.init: this is how
# they find this checkout (PYTHONPATH) and how slow the fake runner's steps are.
WORKER_ENV = {"FAKE_RUNNER_STEP_S": "0.4", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def local_ray():
    saved = dict(os.environ)
    os.environ.update(WORKER_ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield
    ray.shutdown()


def _grid(tmp_path: Path, runner: str, extra: str = "") -> Path:
    path = tmp_path / f"grid-{runner}.yaml"
    path.write_text(f"""\
name: raykill
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
data_root: {tmp_path / 'data'}
checkpoints: random
runner: tests.helpers.ray_runner:{runner}
{extra}""")
    return path


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _run_killing_mid_cell(grid_path: Path, workdir: Path, mid_cell, timeout: float) -> list:
    """run_grid(backend='ray') in a thread; SIGKILL the cell's worker once mid_cell(cell_dir) holds."""
    grid = load_grid(grid_path)
    (cell,) = grid.sweep_cells() + grid.final_cells(grid.fixed_lrs())
    directory = cell_dir(workdir, cell.cell_id)
    outcome: dict = {}

    def target():
        try:
            outcome["records"] = run_grid(grid, workdir, backend="ray", progress=False)
        except BaseException as e:  # noqa: BLE001 - re-raised below in the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    _wait(lambda: (directory / "worker.pid").exists() and mid_cell(directory), timeout, "the cell mid-way")
    pid = int((directory / "worker.pid").read_text())
    assert pid != os.getpid()  # the cell runs in a Ray worker, not in this process
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout)
    assert not thread.is_alive(), "run_grid did not finish after the kill"
    if "error" in outcome:
        raise outcome["error"]
    assert int((directory / "worker.pid").read_text()) != pid  # a new worker ran the retry
    return outcome["records"]


def _same(a, b) -> None:
    for x, y in ((a, b), (b, a)):
        assert [r.cell_id for r in x] == [r.cell_id for r in y]
    for x, y in zip(a, b):
        assert (x.metrics, x.headline, x.steps, x.config) == (y.metrics, y.headline, y.steps, y.config)


def _progress(directory: Path) -> int:
    try:
        return json.loads((directory / "progress.json").read_text())["step"]
    except (FileNotFoundError, ValueError):
        return 0


def test_worker_killed_mid_cell_is_retried_and_resumes(local_ray, tmp_path):
    path = _grid(tmp_path, "fake")
    reference = run_grid(load_grid(path), tmp_path / "ref", progress=False)  # local backend, no kill
    workdir = tmp_path / "ray"
    # A liveness bound, not a speed check: a retried Ray worker starts JAX and compiles again, which took
    # over 120 s on 2 cores shared with two pretraining jobs.
    records = _run_killing_mid_cell(path, workdir, lambda d: 2 <= _progress(d) < 5, timeout=400)
    _same(records, reference)
    assert records[0].extra["resumed_from"] >= 2  # the retry continued from the killed worker's progress
    log = (workdir / "runner.log").read_text().split("\n")
    assert sum(line.startswith("start") for line in log) == 2 and sum(line.startswith("done") for line in log) == 1
    assert len(load_records(workdir)) == 1 and len(list((workdir / "records").glob("*.json"))) == 1
    assert not (cell_dir(workdir, records[0].cell_id) / "lock").exists()


REAL = """\
demo: {num_train: 16, num_eval: 4, seed: 0}
overrides:
  all: {steps: 6, batch_size: 2, text_len: 16, max_decode_len: 4, eval_batch_size: 4, checkpoint_every: 2}
"""


@pytest.mark.slow
def test_real_cell_killed_after_a_checkpoint_resumes_from_orbax(local_ray, tmp_path):
    """run_cell saves orbax checkpoints at steps 2 and 4 of 6; the worker is killed once step 6 is
    logged and step 4's checkpoint is committed (orbax renames its temp folder to `4`), so the retry
    must restore step 4 and train steps 5-6 again."""
    path = _grid(tmp_path, "real", REAL)
    reference = run_grid(load_grid(path), tmp_path / "ref", progress=False)

    def trained(directory: Path) -> bool:
        log = directory / "train_log.csv"
        return (log.exists() and log.read_text().count("\n") >= 7  # header + 6 steps
                and (directory / "ckpt" / "4").is_dir())

    workdir = tmp_path / "ray"
    records = _run_killing_mid_cell(path, workdir, trained, timeout=400)
    _same(records, reference)
    assert records[0].extra["train"]["resumed_from"] == 4
    assert len(list((workdir / "records").glob("*.json"))) == 1


def test_a_cell_that_cannot_fit_fails_in_its_worker_in_one_line(local_ray, tmp_path):
    from harness.run.scheduler import RunError

    path = _grid(tmp_path, "fake", "overrides:\n  vqav2: {steps: 5, batch_size: 16777216, text_len: 32}\n")
    workdir = tmp_path / "w"
    with pytest.raises(RunError, match=r"CellDoesNotFit: vqav2-nano-s-32-\S+: needs [\d.]+ GiB per device "
                                       r"\(nano-s-32, batch 16777216"):
        run_grid(load_grid(path), workdir, backend="ray", progress=False)
    assert not (workdir / "runner.log").exists() and not list((workdir / "records").glob("*.json"))
