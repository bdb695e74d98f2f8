"""Experiment logs: the scalars a training run logs are read back from TensorBoard's own reader (and from
the CSV and an offline Weights & Biases run), with the right step numbers and values."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from harness.cell.experiment_log import check_names, open_log
from harness.cell.train import TrainConfig, schedule, train
from harness.run.grid import GridError, load_grid
from model.paligemma import init_params
from model.testing import tiny_config

REPO = Path(__file__).resolve().parent.parent
TRAIN_TAGS = {"train/loss", "train/lr", "train/grad_norm", "train/examples_per_s"}


def read_tensorboard(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} through TensorBoard's EventAccumulator."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(directory), size_guidance={accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tiny_batches(count: int) -> list[dict]:
    """`count` random batches of 2 examples for tiny_config (prefix 4 tokens, suffix 4), the same each call."""
    rng = np.random.default_rng(0)
    mask_ar = np.array([0] * 4 + [1] * 4, np.int32)
    return [dict(image=rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32),
                 text=rng.integers(3, 300, (2, 8)).astype(np.int32), mask_ar=np.tile(mask_ar, (2, 1)),
                 mask_loss=np.tile(mask_ar, (2, 1)), mask_input=np.ones((2, 8), np.int32)) for _ in range(count)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Five steps of a seconds-to-compile model on random batches (prefix 4 tokens, suffix 4)."""
    work = tmp_path_factory.mktemp("train")
    config = tiny_config(sliding_window=None)
    batches = tiny_batches(5)
    cfg = TrainConfig(lr=1e-3, num_steps=5, warmup_fraction=0.4, seed=0)
    log = open_log(["csv", "tensorboard"], work, run_name="cell")
    train(config, init_params(config, jax.random.key(0)), batches, cfg, workdir=work, progress=False,
          metrics_log=log)
    log.scalars(5, {"eval/accuracy": 0.25, "eval/note": "not a number"})
    log.close()
    return work, cfg


def test_tensorboard_event_file_has_every_step(trained):
    work, cfg = trained
    scalars = read_tensorboard(work / "tensorboard")
    assert set(scalars) == TRAIN_TAGS | {"eval/accuracy"}
    for tag in TRAIN_TAGS:
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4, 5], tag
    assert scalars["eval/accuracy"] == [(5, 0.25)]
    expected_lr = [cfg.lr * float(schedule(5, 0.4)(s)) for s in range(5)]
    assert [v for _, v in scalars["train/lr"]] == pytest.approx(expected_lr, rel=1e-6)
    assert expected_lr[0] == 0.0 and max(expected_lr) == pytest.approx(cfg.lr)
    # The same losses as train_log.csv, which stays.
    with open(work / "train_log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(losses, abs=1e-5)


def test_csv_log_is_long_format(trained):
    work, _ = trained
    with open(work / "scalars.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["name"] for r in rows} == TRAIN_TAGS | {"eval/accuracy"}
    assert [int(r["step"]) for r in rows if r["name"] == "train/loss"] == [1, 2, 3, 4, 5]


def test_names_are_checked():
    assert check_names(["csv"]) == ("csv",)
    with pytest.raises(ValueError, match="unknown experiment log 'tensorbord'; expected some of csv, tensorboard"):
        check_names(["tensorbord"])
    with pytest.raises(ValueError, match="name one writer twice"):
        check_names(["csv", "csv"])


def _grid(path: Path, extra: str = "") -> Path:
    path.write_text("name: g\ntasks: [vqav2]\nsizes: [nano-s]\nresolutions: [32]\nlrs: [1.0e-3]\n"
                    "checkpoints: random\n" + extra)
    return path


def test_grid_chooses_the_writers(tmp_path):
    grid = load_grid(_grid(tmp_path / "a.yaml"))
    assert grid.logging == ("csv", "tensorboard")
    assert all(c.logging == ("csv", "tensorboard") for c in grid.final_cells(grid.fixed_lrs()))
    grid = load_grid(_grid(tmp_path / "b.yaml", "logging: [tensorboard]\n"))
    (cell,) = grid.final_cells(grid.fixed_lrs())
    assert cell.logging == ("tensorboard",)
    assert cell.cell_id == load_grid(_grid(tmp_path / "c.yaml", "logging: []\n")).final_cells(
        grid.fixed_lrs())[0].cell_id  # the writers do not change what a cell computes
    with pytest.raises(GridError, match=r"d.yaml:7: logging: unknown experiment log 'tb'"):
        load_grid(_grid(tmp_path / "d.yaml", "logging: [tb]\n"))


def test_cli_log_flag_replaces_the_grids_choice(tmp_path):
    _grid(tmp_path / "g.yaml")
    env = {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "g.yaml", "--log", "tb"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "invalid choice: 'tb'" in proc.stderr


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "paligemma-transfer-test")
    log = open_log(["wandb"], tmp_path, run_name="vqav2-nano-s-32-lr1e-03-s0-abcdef12", config={"lr": 1e-3})
    for step in (1, 2, 3):
        log.scalars(step, {"train/loss": 1.0 / step, "train/lr": 1e-3})
    log.scalars(3, {"eval/accuracy": 0.5})
    (run,) = [w._run for w in log.logs]
    assert run.id == "vqav2-nano-s-32-lr1e-03-s0-abcdef12" and run.config["lr"] == 1e-3
    log.close()
    # wandb 0.31 has no Python reader of its .wandb transaction log: check it holds the logged keys. Its
    # separate wandb-core process may still be writing it when finish() returns.
    (folder,) = (tmp_path / "wandb").glob("offline-run-*-vqav2-nano-s-32-lr1e-03-s0-abcdef12")
    (path,) = folder.glob("*.wandb")
    deadline = time.monotonic() + 30
    while b"eval/accuracy" not in path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"train/loss" in path.read_bytes() and b"eval/accuracy" in path.read_bytes()
