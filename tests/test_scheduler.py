"""The scheduler: protocol order, resume after SIGKILL (mid-cell and between cells), locks, dry run.

The runner is tests/helpers/fake_runner.py: it "trains" in steps saved to progress.json, resumes from
it, logs each start/finish to workdir/runner.log and returns metrics that depend only on the cell.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.run.demo_data import prepare_demo_data
from harness.run.grid import load_grid
from harness.run.locks import UNREADABLE_GRACE_S, CellLock
from harness.run.scheduler import RunError, execute_cell, make_record, run_grid
from harness.run.workdir import cell_dir
from results.store import has_record, load_records, predictions_path, write_record
from results.tables import write_tables
from tests.helpers import fake_runner

REPO = Path(__file__).resolve().parents[1]

GRID = """\
name: sched
demo: true
tasks: [vqav2]
sizes: [nano-s, nano-m]
resolutions: [32, 64]
lrs: [1.0e-4, 1.0e-3]
protocol:
  final: {seeds: 2}
data_root: DATA
checkpoints: random
runner: tests.helpers.fake_runner:RUNNER
"""

SCRIPT = ("import sys; from harness.run.grid import load_grid; from harness.run.scheduler import run_grid; "
          "run_grid(load_grid(sys.argv[1]), sys.argv[2], progress=False)")


@pytest.fixture
def grid_file(tmp_path):
    def make(runner: str = "run") -> Path:
        path = tmp_path / f"grid-{runner}.yaml"
        path.write_text(GRID.replace("DATA", str(tmp_path / "data")).replace("RUNNER", runner))
        return path
    return make


def log_lines(workdir: Path) -> list[list[str]]:
    path = workdir / "runner.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def test_protocol_records_predictions_and_no_rerun(tmp_path, grid_file):
    grid = load_grid(grid_file())
    workdir = tmp_path / "w"
    records = run_grid(grid, workdir, progress=False)
    assert len(records) == 4 + 8
    assert (workdir / "grid.yaml").read_text() == grid.text
    # fake_runner peaks at lr 1e-3 for nano-s and 1e-4 for nano-m: the final runs must use those.
    best = json.loads((workdir / "best_lr.json").read_text())
    assert {(c["size"], c["lr"]) for c in best["swept"]} == {("nano-s", 1e-3), ("nano-m", 1e-4)}
    final = [r for r in records if r.phase == "final"]
    assert {(r.size, r.lr) for r in final} == {("nano-s", 1e-3), ("nano-m", 1e-4)}
    assert {(r.resolution, r.seed, r.split) for r in final} == {(res, s, "eval") for res in (32, 64) for s in (0, 1)}
    for r in records:
        assert r.cell_id.endswith(r.config_hash) and r.config["lr"] == r.lr and r.demo
        assert r.metrics["accuracy"] == pytest.approx(fake_runner.score(
            next(c for c in grid.sweep_cells() + grid.final_cells({("vqav2", "nano-s"): 1e-3,
                                                                  ("vqav2", "nano-m"): 1e-4})
                 if c.cell_id == r.cell_id)))
        assert r.extra == {"resumed_from": 0} and r.steps == fake_runner.STEPS
        assert set(r.versions) >= {"python", "jax", "flax", "optax", "paligemma-transfer"}
        assert predictions_path(workdir, r.cell_id).is_file()
        assert not (cell_dir(workdir, r.cell_id) / "predictions.jsonl").exists()
        assert not (cell_dir(workdir, r.cell_id) / "lock").exists()
    starts = len(log_lines(workdir))
    again = run_grid(grid, workdir, progress=False)
    assert [r.cell_id for r in again] == [r.cell_id for r in records]
    assert len(log_lines(workdir)) == starts  # nothing ran again


def _start(grid_path: Path, workdir: Path, start_s: float = 0.2, step_s: float = 0.03) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "FAKE_RUNNER_START_S": str(start_s), "FAKE_RUNNER_STEP_S": str(step_s)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(grid_path), str(workdir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _progress(workdir: Path) -> dict[str, int]:
    found = {}
    for p in (workdir / "cells").glob("*/progress.json"):
        try:
            found[p.parent.name] = json.loads(p.read_text())["step"]
        except (ValueError, FileNotFoundError):  # mid-replace
            continue
    return found


def test_sigkill_mid_cell_and_between_cells_then_resume(tmp_path, grid_file):
    path = grid_file()
    grid = load_grid(path)
    reference = tmp_path / "ref" / "w"
    run_grid(grid, reference, progress=False)

    workdir = tmp_path / "killed" / "w"
    # 1) Kill mid-cell: a cell has saved some steps but has no record.
    proc = _start(path, workdir)
    wait_until(lambda: any(1 <= s <= 2 and not has_record(workdir, c)
                           for c, s in _progress(workdir).items()), what="a cell mid-way")
    _kill(proc)
    interrupted = {c: s for c, s in _progress(workdir).items() if not has_record(workdir, c)}
    assert len(interrupted) == 1 and 0 < next(iter(interrupted.values())) < fake_runner.STEPS
    (cut_cell, cut_step), = interrupted.items()

    # 2) Kill between cells: right after the 6th record, while the next runner is still in its start-up.
    proc = _start(path, workdir)
    wait_until(lambda: len(list((workdir / "records").glob("*.json"))) >= 6, what="6 records")
    _kill(proc)
    assert len(list((workdir / "records").glob("*.json"))) == 6
    assert all(has_record(workdir, c) for c in _progress(workdir))  # no cell has started steps

    # 3) Finish.
    proc = _start(path, workdir)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()

    records = load_records(workdir)
    ids = [c.cell_id for c in grid.sweep_cells()] + [r.cell_id for r in load_records(reference)
                                                     if r.phase == "final"]
    assert sorted(r.cell_id for r in records) == sorted(ids)  # every cell exactly once
    log = log_lines(workdir)
    done = Counter(line[1] for line in log if line[0] == "done")
    assert set(done) == set(ids) and set(done.values()) == {1}  # no finished cell ran twice
    starts = [(line[1], int(line[2])) for line in log if line[0] == "start" and line[1] == cut_cell]
    assert starts == [(cut_cell, 0), (cut_cell, cut_step)]  # resumed from its progress, not from 0
    assert next(r for r in records if r.cell_id == cut_cell).extra["resumed_from"] == cut_step
    assert not list((workdir / "cells").glob("*/lock"))  # the stale lock of step 2 was taken over
    assert write_tables(workdir) == write_tables(reference)


def test_two_schedulers_on_one_workdir_share_the_cells(tmp_path, grid_file):
    path = grid_file()
    workdir = tmp_path / "w"
    procs = [_start(path, workdir, start_s=0.02, step_s=0.03) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    done = Counter(line[1] for line in log_lines(workdir) if line[0] == "done")
    assert len(done) == 12 and set(done.values()) == {1}
    assert len(load_records(workdir)) == 12
    assert {int(line[3]) for line in log_lines(workdir) if line[0] == "start"} == {p.pid for p in procs}


def _write_lock(path: Path, host: str, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "someone-else"}))


def _dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(out.stdout)


def test_live_lock_is_respected_and_waited_for(tmp_path, grid_file):
    grid = load_grid(grid_file())
    workdir = tmp_path / "w"
    target = grid.sweep_cells()[1]
    lock = cell_dir(workdir, target.cell_id) / "lock"
    _write_lock(lock, socket.gethostname(), os.getppid())  # a live process that is not us
    done: list = []
    thread = threading.Thread(target=lambda: done.append(run_grid(grid, workdir, progress=False, poll_s=0.02)))
    thread.start()
    others = [c for c in grid.sweep_cells() if c != target]
    wait_until(lambda: all(has_record(workdir, c.cell_id) for c in others), what="the other sweep cells")
    time.sleep(0.2)
    assert thread.is_alive() and not has_record(workdir, target.cell_id)
    assert target.cell_id not in {line[1] for line in log_lines(workdir)}
    # The lock holder finishes the cell and lets go; the scheduler goes on without running it.
    write_record(workdir, make_record(target, execute_cell(target, workdir, grid.runner)))
    lock.unlink()
    thread.join(timeout=60)
    assert not thread.is_alive() and len(done[0]) == 12
    assert sum(1 for line in log_lines(workdir) if line[:2] == ["start", target.cell_id]) == 1


def test_stale_lock_is_taken_over(tmp_path, grid_file):
    grid = load_grid(grid_file())
    workdir = tmp_path / "w"
    target = grid.sweep_cells()[0]
    lock = cell_dir(workdir, target.cell_id) / "lock"
    _write_lock(lock, socket.gethostname(), _dead_pid())
    assert len(run_grid(grid, workdir, progress=False)) == 12
    assert has_record(workdir, target.cell_id) and not lock.exists()


def test_stale_lock_of_a_finished_cell_is_cleared(tmp_path, grid_file):
    """A scheduler killed between writing a cell's record and releasing its lock leaves the lock behind;
    the next run removes it (a live holder's lock on a finished cell is left alone)."""
    grid = load_grid(grid_file())
    workdir = tmp_path / "w"
    run_grid(grid, workdir, progress=False)
    dead, live = (cell_dir(workdir, c.cell_id) / "lock" for c in grid.sweep_cells()[:2])
    _write_lock(dead, socket.gethostname(), _dead_pid())
    _write_lock(live, socket.gethostname(), os.getppid())
    run_grid(grid, workdir, progress=False)
    assert not dead.exists() and live.exists()


def test_lock_rules(tmp_path):
    path = tmp_path / "lock"
    mine = CellLock(path)
    assert mine.acquire() and mine.owner() == mine.me
    mine.release()
    assert not path.exists()
    _write_lock(path, "another-host", 1)  # cannot be checked from here: live
    assert not CellLock(path).acquire() and str(CellLock(path).owner()) == "another-host:1"
    _write_lock(path, socket.gethostname(), os.getppid())
    assert not CellLock(path).acquire()
    _write_lock(path, socket.gethostname(), _dead_pid())
    taker = CellLock(path)
    assert taker.acquire() and taker.owner() == taker.me
    taker.release()
    path.write_text("")  # a creator that died between creating and writing the lock
    assert not CellLock(path).acquire()
    old = time.time() - UNREADABLE_GRACE_S - 1
    os.utime(path, (old, old))
    assert CellLock(path).acquire()


def test_failed_cell_is_reported_and_not_recorded(tmp_path, grid_file):
    grid = load_grid(grid_file("run_failing_nano_m"))
    workdir = tmp_path / "w"
    with pytest.raises(RunError, match=r"2 sweep cell\(s\) failed.*simulated failure"):
        run_grid(grid, workdir, progress=False)
    failed = [c for c in grid.sweep_cells() if c.size == "nano-m"]
    for c in grid.sweep_cells():
        assert has_record(workdir, c.cell_id) == (c.size == "nano-s")
        assert not (cell_dir(workdir, c.cell_id) / "lock").exists()
    assert "simulated failure" in (cell_dir(workdir, failed[0].cell_id) / "error.txt").read_text()
    assert not (workdir / "best_lr.json").exists()  # no final phase on an incomplete sweep


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, grid_file, capsys):
    grid = load_grid(grid_file())
    workdir = tmp_path / "w"
    assert run_grid(grid, workdir, dry_run=True) == []
    out = capsys.readouterr().out
    assert not workdir.exists()
    assert "12 cells (4 sweep, 8 final), 0 done" in out
    assert out.count("best of sweep") == 8 and out.count("after sweep") == 8
    assert all(c.cell_id in out for c in grid.sweep_cells())
    run_grid(grid, workdir, progress=False)
    run_grid(grid, workdir, dry_run=True)
    out = capsys.readouterr().out
    assert "12 done; left to run: 0 cells" in out and "best of sweep" not in out


def test_demo_data_written_once_when_missing(tmp_path, grid_file, monkeypatch):
    calls = []

    class FakeTask:
        def write_demo(self, manual_dir, *, num_train, num_eval, seed):
            calls.append((num_train, num_eval, seed))
            (Path(manual_dir) / "annotations.json").write_text("[]")

    monkeypatch.setattr("tasks.registry.get_task", lambda name: FakeTask())
    text = grid_file().read_text().replace("demo: true", "demo: {num_train: 6, num_eval: 2, seed: 3}")
    (tmp_path / "demo.yaml").write_text(text)
    grid = load_grid(tmp_path / "demo.yaml")
    prepare_demo_data(grid)
    prepare_demo_data(grid)
    assert calls == [(6, 2, 3)]
    assert (tmp_path / "data" / "vqav2" / "annotations.json").is_file()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["vqav2"]  # no temp folder left


def test_ray_backend(tmp_path, grid_file):
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        grid = load_grid(grid_file())
        records = run_grid(grid, tmp_path / "w", backend="ray", progress=False)
        assert len(records) == 12 and not list((tmp_path / "w" / "cells").glob("*/lock"))
    finally:
        ray.shutdown()
