"""The training loop overlapped with its input: a NaN loss stops the cell in one line before any checkpoint
holds the state it made; a resumed run's logs (scalars.csv, TensorBoard as its own reader sees it) hold
each step once; uint8 batches train as their [-1, 1] float images; `data_workers` is not in a cell's id."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.cell.data import host_batches
from harness.cell.experiment_log import open_log
from harness.cell.train import NonFiniteLoss, TrainConfig, build_model, make_loss_fn, train
from model.paligemma import init_params
from model.testing import tiny_config
from tests.helpers.tiny_training import FailAt
from tests.test_experiment_log import read_tensorboard

STEPS, EVERY = 6, 2


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    config = tiny_config(sliding_window=None)
    mask_ar = np.array([0] * 4 + [1] * 4, np.int32)
    batches = [dict(image=rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
                    text=rng.integers(3, 300, (2, 8)).astype(np.int32), mask_ar=np.tile(mask_ar, (2, 1)),
                    mask_loss=np.tile(mask_ar, (2, 1)), mask_input=np.ones((2, 8), np.int32))
               for _ in range(STEPS)]
    base = jax.tree_util.tree_map(np.asarray, init_params(config, jax.random.key(0)))
    return config, base, batches


def _train(setup, workdir: Path, batches=None, metrics_log=None):
    config, base, all_batches = setup
    params = jax.tree_util.tree_map(jnp.asarray, base)  # a fresh copy: the step donates its input
    cfg = TrainConfig(lr=1e-3, num_steps=STEPS, checkpoint_every=EVERY, seed=0)
    return train(config, params, all_batches if batches is None else batches, cfg, workdir=workdir,
                 progress=False, desc="train cell-7", metrics_log=metrics_log)


def _checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "ckpt").iterdir() if p.name.isdigit())


def test_a_nan_loss_stops_the_cell_in_one_line_before_its_state_is_saved(setup, tmp_path):
    batches = [{**b, "image": b["image"] / np.float32(127.5) - 1} for b in setup[2]]  # one compilation
    batches[2]["image"] = np.full((2, 16, 16, 3), np.nan, np.float32)  # step 3's loss is NaN
    with pytest.raises(NonFiniteLoss) as raised:
        _train(setup, tmp_path, batches)
    message = str(raised.value)
    assert message == "train cell-7: the loss is nan at step 3; stopped without saving that state"
    assert _checkpoint_steps(tmp_path) == [2]  # step 4's checkpoint would hold NaN params: never written
    with open(tmp_path / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2]



def test_experiment_logs_cut_back_to_the_resumed_step(tmp_path):
    """A run logs steps 1-5 and dies; its checkpoint was step 2; the rerun logs 3-6 with new values."""
    log = open_log(["csv", "tensorboard"], tmp_path, run_name="cell")
    log.resume_at(0)
    for step in range(1, 6):
        log.scalars(step, {"train/loss": 10.0 + step})
    log.close()
    log = open_log(["csv", "tensorboard"], tmp_path, run_name="cell")
    log.resume_at(2)
    for step in range(3, 7):
        log.scalars(step, {"train/loss": float(step)})
    log.flush()
    with open(tmp_path / "scalars.csv") as f:  # flushed: readable while the run goes on
        rows = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f)]
    log.close()
    expected = [(1, 11.0), (2, 12.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 6.0)]
    assert rows == expected
    assert [(s, v) for s, v in read_tensorboard(tmp_path / "tensorboard")["train/loss"]] == expected


@pytest.mark.slow
def test_a_resumed_run_logs_each_step_once(setup, tmp_path):
    log = open_log(["csv", "tensorboard"], tmp_path, run_name="cell")
    with pytest.raises(RuntimeError, match="interrupted"):
        _train(setup, tmp_path, FailAt(setup[2], 3), metrics_log=log)  # steps 1-3 logged, checkpoint at 2
    log.close()
    first = read_tensorboard(tmp_path / "tensorboard")
    assert [s for s, _ in first["train/loss"]] == [1, 2, 3]
    log = open_log(["csv", "tensorboard"], tmp_path, run_name="cell")
    _, summary = _train(setup, tmp_path, metrics_log=log)
    log.close()
    assert summary["resumed_from"] == 2
    with open(tmp_path / "scalars.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["name"] == "train/loss"]
    assert steps == list(range(1, STEPS + 1))
    scalars = read_tensorboard(tmp_path / "tensorboard")
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    with open(tmp_path / "train_log.csv") as f:  # the resumed run's own values, not the killed run's
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(losses, abs=1e-5)


def test_uint8_batches_train_as_their_float_images(setup):
    config, base, batches = setup
    cfg = TrainConfig(lr=1e-3, num_steps=1)
    loss_fn = jax.jit(make_loss_fn(build_model(config, cfg), 0.0, "dense"))
    batch = batches[0]
    as_float = {**batch, "image": batch["image"].astype(np.float32) / 127.5 - 1.0}
    key = jax.random.key(0)
    np.testing.assert_allclose(loss_fn(base, batch, key), loss_fn(base, as_float, key), rtol=1e-5)


def test_host_batches_stop_at_the_last_step_and_start_at_the_resumed_one(setup):
    batches = setup[2]
    got = list(host_batches(batches, start=4, stop=STEPS))
    assert len(got) == 2 and all(np.array_equal(g["text"], b["text"]) for g, b in zip(got, batches[4:]))


def test_data_workers_is_an_option_not_part_of_a_cells_identity(tmp_path):
    from harness.run.grid import load_grid
    from tests.test_grid import GRID, write

    base = load_grid(write(tmp_path, GRID))
    with_workers = load_grid(write(tmp_path, GRID.replace("all: {steps: 10,", "all: {data_workers: 3, steps: 10,")))
    cells = with_workers.sweep_cells()
    assert dict(cells[0].overrides)["data_workers"] == 3
    assert [c.cell_id for c in cells] == [c.cell_id for c in base.sweep_cells()]
