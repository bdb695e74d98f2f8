"""Checkpoints that can be trusted (docs/fault-matrix.md): a few KiB damaged inside an orbax data file are
caught by the checkpoint's sha256 manifest (orbax itself restores them without complaint), the checkpoint
is set aside and the cell trains again from its base; a write that fails in orbax's own worker thread (no
space left) is one line, with the previous checkpoint intact; a gs:// checkpoint path reaches orbax whole."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.cell import checkpoints
from harness.cell.checkpoints import MANIFEST, Checkpoints, as_path
from harness.cell.train import TrainConfig, train
from tests.helpers.tiny_training import FailAt, nano_setup

REPO = Path(__file__).resolve().parent.parent
STEPS, EVERY = 6, 2


@pytest.fixture(scope="module")
def setup():
    return nano_setup(STEPS)



def _train(setup, workdir, stop_at=None):
    config, base, batches = setup
    params = jax.tree_util.tree_map(jnp.asarray, base)
    cfg = TrainConfig(lr=1e-3, num_steps=STEPS, checkpoint_every=EVERY, seed=0)
    return train(config, params, batches if stop_at is None else FailAt(batches, stop_at), cfg,
                 workdir=workdir, progress=False)


def _largest_data_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("fill", ["random", "zeros"])
def test_a_few_kib_overwritten_inside_a_data_file_are_caught_and_training_restarts(setup, tmp_path, capfd, fill):
    with pytest.raises(RuntimeError, match="interrupted"):
        _train(setup, tmp_path, stop_at=5)  # checkpoint at step 4
    step_dir = tmp_path / "ckpt" / "4"
    assert json.loads((step_dir / MANIFEST).read_text())  # written once the save finished
    victim = _largest_data_file(step_dir)
    size = victim.stat().st_size
    assert size > 64 << 10
    with open(victim, "r+b") as f:  # 4 KiB at two offsets inside the file; its size is unchanged
        for offset in (size // 3, 2 * size // 3):
            f.seek(offset)
            f.write(os.urandom(4096) if fill == "random" else bytes(4096))
    capfd.readouterr()
    _, summary = _train(setup, tmp_path)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "unreadable checkpoint" in line]
    assert len(lines) == 1 and "sha256 differs" in lines[0] and victim.name in lines[0], err[-2000:]
    assert summary["resumed_from"] == 0 and np.isfinite(summary["final_loss"])
    aside = list(tmp_path.glob("ckpt.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "4").is_dir()


def test_an_intact_checkpoint_passes_its_manifest_and_resumes(setup, tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        _train(setup, tmp_path, stop_at=5)
    _, summary = _train(setup, tmp_path)
    assert summary["resumed_from"] == 4 and not list(tmp_path.glob("ckpt.corrupt-*"))


def test_no_space_in_orbax_finalize_thread_is_one_error_and_keeps_the_last_checkpoint(setup, tmp_path, capfd,
                                                                                   monkeypatch):
    from orbax.checkpoint._src.path import async_path

    real = async_path.rename
    calls = []

    async def rename(src, dst):  # the temp folder's rename into place, in orbax's finalize thread
        calls.append(str(dst))
        if str(dst).endswith("/4"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await real(src, dst)

    monkeypatch.setattr(async_path, "rename", rename)
    capfd.readouterr()
    with pytest.raises(OSError, match="No space left on device") as info:
        _train(setup, tmp_path)
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) <= 3 and "Traceback" not in err, err[-3000:]
    assert "checkpoint step 4" in str(info.value) and "\n" not in str(info.value)
    assert info.value.errno == errno.ENOSPC and any(c.endswith("/4") for c in calls)
    monkeypatch.setattr(async_path, "rename", real)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == ["2"]
    _, summary = _train(setup, tmp_path)
    assert summary["resumed_from"] == 2


def test_a_bucket_path_reaches_orbax_whole(monkeypatch):
    """pathlib turns gs://bucket/x into gs:/bucket/x; the checkpoint path keeps its scheme."""
    assert str(Path("gs://bucket/run/ckpt")) == "gs:/bucket/run/ckpt"  # what the checkpoints must avoid
    assert os.fspath(as_path("gs://bucket/run/ckpt")) == "gs://bucket/run/ckpt"
    assert os.fspath(as_path("gs://bucket/run") / "ckpt") == "gs://bucket/run/ckpt"
    seen = []

    class Manager:
        def __init__(self, directory, options=None):
            seen.append(os.fspath(directory))

    import orbax.checkpoint as ocp

    monkeypatch.setattr(ocp, "CheckpointManager", Manager)
    Checkpoints("gs://bucket/run/cells/c1/ckpt", 2)
    assert seen == ["gs://bucket/run/cells/c1/ckpt"]
    assert checkpoints.as_path("relative/ckpt").is_absolute()
