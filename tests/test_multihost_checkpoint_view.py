"""A cell's checkpoint that is good on disk but bad in one host's view (a stale NFS cache, a disk error on
one host) in a multi-host job (docs/fault-matrix.md): two CPU processes form one jax.distributed job and
run the real cell runner on the nano model. A first job is interrupted right after the second cell's
first checkpoint; in the second job process 1 alone fails to open the checkpoint folder, lists no
checkpoint, sees it fail its sha256 check, fails to read one of its files, or fails its orbax restore
(tests/helpers/one_host_view.py). Every process must reach the same verdict (a process that skips a
collective the other is in hangs or aborts the job): the checkpoint is moved aside once, stderr names
process 1 as the one that saw the problem, both processes train the cell again from its base params and
exit 0 (within 150 s of the fault, the retraining included, where a process left waiting would sit until
the job's timeout), and the cell that had finished in the first job does not run again."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.two_processes import run_two

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 4, 2  # one checkpoint, at step 2

GRID = """\
name: mhview
demo: {{num_train: 4, num_eval: 2, seed: 5}}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
protocol: {{final: {{seeds: 2}}}}
data_root: {data}
checkpoints: random
runner: tests.helpers.one_host_view:run
overrides:
  all: {{steps: {steps}, checkpoint_every: {every}, batch_size: 2, text_len: 24, max_decode_len: 4,
        eval_batch_size: 2, tokenizer: {tok}}}
"""


def _job(grid: Path, workdir: Path, logs: Path, env: dict[str, str]) -> tuple[list[int], list[str]]:
    """Both processes' exit codes and their stderr."""
    logs.mkdir()
    codes = run_two([sys.executable, "-m", "harness.cli", "run", str(grid), "--workdir", str(workdir), "--quiet"],
                    logs, devices=1, timeout=300, env={"PALIGEMMA_TRANSFER_HEARTBEAT_S": "5", **env},
                    per_process={"PALIGEMMA_TRANSFER_CACHE": str(logs.parent / "cache")})
    return codes, [(logs / f"err{i}").read_text() for i in range(2)]


def _starts(workdir: Path) -> list[str]:
    return [line.split()[1] for line in (workdir / "runner.log").read_text().splitlines()]


def _records(workdir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (workdir / "records").glob("*.json")}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Path, Path, str, str]:
    """(grid, workdir, finished cell, interrupted cell): the first cell finished, the second stopped on
    every process right after its checkpoint at step EVERY was written (with its manifest)."""
    base = tmp_path_factory.mktemp("mhview")
    grid = base / "grid.yaml"
    grid.write_text(GRID.format(data=base / "data", steps=STEPS, every=EVERY,
                                tok=ROOT / "model" / "assets" / "nano_tokenizer.model"))
    workdir = base / "out"
    codes, errs = _job(grid, workdir, base / "logs", {"CHECKPOINT_INTERRUPT": "2"})
    assert codes[0] == codes[1] != 0, (codes, [e[-3000:] for e in errs])
    finished, stopped = _starts(workdir)
    assert set(_records(workdir)) == {finished}
    assert "interrupted after its checkpoint at step 2" in (workdir / "cells" / stopped / "error.txt").read_text()
    step = workdir / "cells" / stopped / "ckpt" / str(EVERY)
    assert (step / "manifest.sha256.json").is_file(), sorted(p.name for p in step.parent.iterdir())
    return grid, workdir, finished, stopped


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["open", "listing", "digest", "unreadable", "restore"])
def test_a_checkpoint_bad_in_one_hosts_view_is_set_aside_once_and_the_cell_restarts(interrupted, tmp_path, fault):
    grid, first, finished, stopped = interrupted
    workdir = tmp_path / "out"
    shutil.copytree(first, workdir)  # each fault resumes the same interrupted job

    codes, errs = _job(grid, workdir, tmp_path / "logs", {"CHECKPOINT_VIEW": f"{fault}:1"})
    ended = time.time()
    assert codes == [0, 0], (codes, [e[-3000:] for e in errs])
    seen, fired = (workdir / "view_fault.log").read_text().split()
    assert seen == fault and ended - float(fired) < 150, ended - float(fired)  # no process waited on another

    cell = workdir / "cells" / stopped
    assert len(list(cell.glob("ckpt.corrupt-*"))) == 1  # moved aside once, by process 0
    assert (list(cell.glob("ckpt.corrupt-*"))[0] / str(EVERY) / "manifest.sha256.json").is_file()
    said = [line for line in errs[0].splitlines() if "unreadable checkpoint" in line]
    assert len(said) == 1 and "unreadable checkpoint (process 1: " in said[0], errs[0][-3000:]
    assert not any("unreadable checkpoint" in line for line in errs[1].splitlines())
    expected = {"open": "Input/output error opening ",
                "listing": "its latest checkpoint step is None, process 0's is 2",
                "digest": "sha256 differs for ", "unreadable": "could not read a file: OSError: [Errno 5]",
                "restore": "Input/output error reading "}[fault]
    assert expected in said[0], said[0]

    assert _starts(workdir)[2:] == [stopped]  # the finished cell does not run again
    records = _records(workdir)
    assert set(records) == {finished, stopped}
    assert records[stopped]["extra"]["train"]["resumed_from"] == 0  # trained again from the base params
    assert records[stopped]["steps"] == STEPS
