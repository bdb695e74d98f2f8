"""Checkpoint faults with the real trainer (docs/fault-matrix.md): a corrupt or half-written orbax
checkpoint is named in one line, set aside and training restarts from the base params; no space left while
writing a checkpoint fails the cell and the rerun resumes from the last good one; train_log.csv holds each
step once across a resume."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.cell import checkpoints as checkpoints_module
from harness.cell.train import TrainConfig, train
from tests.helpers.tiny_training import FailAt, nano_setup

REPO = Path(__file__).resolve().parent.parent
STEPS, EVERY = 6, 2


@pytest.fixture(scope="module")
def setup():
    return nano_setup(STEPS)


def _train(setup, workdir, batches=None):
    config, base, all_batches = setup
    params = jax.tree_util.tree_map(jnp.asarray, base)  # a fresh copy: the train step donates its input
    cfg = TrainConfig(lr=1e-3, num_steps=STEPS, checkpoint_every=EVERY, seed=0)
    return train(config, params, batches if batches is not None else all_batches, cfg, workdir=workdir,
                 progress=False)



def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "ckpt").iterdir() if p.name.isdigit())


def _log_steps(workdir: Path) -> list[int]:
    with open(workdir / "train_log.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_resume_logs_each_step_once_and_matches_an_uninterrupted_run(setup, tmp_path):
    reference, _ = _train(setup, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="interrupted"):
        _train(setup, tmp_path / "run", FailAt(setup[2], 3))  # steps 1-3 logged, checkpoint at 2
    assert _log_steps(tmp_path / "run") == [1, 2, 3] and _steps(tmp_path / "run") == [2]
    params, summary = _train(setup, tmp_path / "run")
    assert summary["resumed_from"] == 2
    assert _log_steps(tmp_path / "run") == list(range(1, STEPS + 1))
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["random bytes", pytest.param("half written", marks=pytest.mark.slow)])
def test_corrupt_checkpoint_is_set_aside_and_training_restarts_from_the_base(setup, tmp_path, capfd, damage):
    with pytest.raises(RuntimeError, match="interrupted"):
        _train(setup, tmp_path, FailAt(setup[2], 5))  # checkpoint at step 4
    step_dir = tmp_path / "ckpt" / "4"
    files = sorted(p for p in step_dir.rglob("*") if p.is_file())
    for i, path in enumerate(files):
        if damage == "random bytes":
            path.write_bytes(os.urandom(max(path.stat().st_size, 16)))
        elif i % 2 == 0:
            path.unlink()
    capfd.readouterr()
    _, summary = _train(setup, tmp_path)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "unreadable checkpoint" in line]
    assert len(lines) == 1 and str(tmp_path / "ckpt") in lines[0], err[-2000:]
    assert len(err.splitlines()) < 20 and "Traceback" not in err  # not thousands of lines of tracebacks
    assert summary["resumed_from"] == 0
    aside = list(tmp_path.glob("ckpt.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "4").is_dir()  # set aside, not deleted
    assert _log_steps(tmp_path) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_enospc_writing_a_checkpoint_fails_and_the_rerun_resumes_from_the_last_good_one(setup, tmp_path,
                                                                                        monkeypatch):
    real = checkpoints_module.Checkpoints.save

    def save(self, step, state):
        if step == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, step, state)

    monkeypatch.setattr(checkpoints_module.Checkpoints, "save", save)
    with pytest.raises(OSError, match="No space left on device"):
        _train(setup, tmp_path)
    monkeypatch.setattr(checkpoints_module.Checkpoints, "save", real)
    assert _steps(tmp_path) == [2]
    _, summary = _train(setup, tmp_path)
    assert summary["resumed_from"] == 2 and _log_steps(tmp_path) == list(range(1, STEPS + 1))
