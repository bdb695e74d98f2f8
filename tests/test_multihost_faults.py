"""Multi-host fail-fast (docs/scale.md, docs/fault-matrix.md): two CPU processes form one job
(jax.distributed on localhost); a cell that fails on one host only, or a host killed outright, ends both
processes with a non-zero exit within 60 s instead of leaving the other waiting in a collective; error.txt
names the host that failed and why; the rerun finishes the grid without running a finished cell again."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.two_processes import run_two

ROOT = Path(__file__).resolve().parents[1]

GRID = """\
name: mhfault
demo: {{num_train: 4, num_eval: 2, seed: 5}}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3, 3.0e-3]
data_root: {data}
checkpoints: random
runner: tests.helpers.multihost_runner:run
"""


def _run_job(tmp_path: Path, grid: Path, fault: str, tag: str) -> tuple[list[int], float, list[str]]:
    logs = tmp_path / f"logs-{tag}"
    logs.mkdir()
    start = time.monotonic()
    codes = run_two([sys.executable, "-m", "harness.cli", "run", str(grid), "--workdir", str(tmp_path / "out"),
                     "--quiet"], logs, devices=1, timeout=240,
                    env={"PALIGEMMA_TRANSFER_HEARTBEAT_S": "5", "MULTIHOST_FAULT": fault},
                    per_process={"PALIGEMMA_TRANSFER_CACHE": str(tmp_path / "cache")})
    errs = [logs / f"err{i}" for i in range(2)]
    return codes, time.monotonic() - start, [e.read_text() for e in errs]


def _starts(workdir: Path) -> list[str]:
    log = workdir / "runner.log"
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["raise:1", "raise:0", "kill:1"])
def test_a_failure_on_one_host_ends_every_process_and_the_rerun_resumes(tmp_path, fault):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(data=tmp_path / "data"))
    workdir = tmp_path / "out"
    codes, _, _ = _run_job(tmp_path, grid, "", "warm")  # a clean job first: the timing below is the fault's
    assert codes == [0, 0]
    for path in (workdir / "records").glob("*.json"):  # start over, keeping the prepared data
        path.unlink()
    (workdir / "runner.log").unlink()

    codes, seconds, errs = _run_job(tmp_path, grid, fault, "fault")
    assert all(code != 0 for code in codes), (codes, errs)
    job_start = seconds
    assert job_start < 60 + 30, (seconds, errs)  # 60 s after the failure, ~30 s for two jax start-ups
    started = _starts(workdir)
    failed = started[-1]
    if fault.startswith("raise"):
        text = (workdir / "cells" / failed / "error.txt").read_text()
        host = fault.split(":")[1]
        assert text.startswith(f"process {host} of 2 (host {socket.gethostname()}, pid ")
        assert "disk of" in text and "unreadable on this host only" in text
        assert "Traceback" not in errs[int(host)]
        assert errs[int(host)].strip().splitlines()[-1].startswith("paligemma-transfer run: error: RunError: ")
    finished = {p.stem for p in (workdir / "records").glob("*.json")}
    assert failed not in finished

    codes, _, errs = _run_job(tmp_path, grid, "", "rerun")
    assert codes == [0, 0], errs
    rerun = _starts(workdir)[len(started):]
    assert not finished & set(rerun)  # nothing finished runs again
    assert len(list((workdir / "records").glob("*.json"))) == 3
