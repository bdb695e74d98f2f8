"""Eval-only cells (grid `train: false`, `paligemma-transfer eval`): a checkpoint scored as it is, with a
record that says so, equal to the eval part of a cell whose training leaves the params as they were."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.cell import run_cell as run_cell_module
from harness.cli import main
from harness.run.grid import GridError, load_grid
from tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "checkpoints" / "nano" / "nano-s-32.npz"

GRID = """\
name: evalonly
train: false
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
data_root: {data}
checkpoints: {ckpt}
overrides:
  all: {{max_eval_examples: 6, eval_batch_size: 6, text_len: 48, max_decode_len: 8}}
"""


def _grid(tmp_path: Path):
    get_task("vqav2").write_demo(tmp_path / "data" / "vqav2", num_train=4, num_eval=6, seed=0)
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data", ckpt=CHECKPOINT))
    return load_grid(path)


def test_an_eval_only_grid_has_no_sweep_and_its_ids_say_eval(tmp_path):
    grid = _grid(tmp_path)
    assert grid.sweep_cells() == [] and not grid.train
    (cell,) = grid.final_cells(grid.fixed_lrs())
    assert "-eval-s0-" in cell.cell_id and cell.config()["train"] is False
    path = tmp_path / "bad.yaml"
    path.write_text(GRID.format(data=tmp_path / "data", ckpt=CHECKPOINT) + "lrs: [1.0e-3]\n")
    with pytest.raises(GridError, match="lrs: an eval-only grid"):
        load_grid(path)


@pytest.mark.slow
def test_eval_only_cell_equals_the_eval_of_a_cell_that_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    grid = _grid(tmp_path)
    (cell,) = grid.final_cells(grid.fixed_lrs())
    evaluated = run_cell_module.run_cell(cell, tmp_path / "eval", progress=False)
    assert evaluated["steps"] == 0 and evaluated["train"] == {"steps": 0, "trained": False}

    monkeypatch.setattr(run_cell_module, "train", lambda config, params, batches, cfg, **kw: (params, {"steps": 0}))
    trained = run_cell_module.run_cell(dataclasses.replace(cell, train=True, lr=1e-3), tmp_path / "train",
                                       progress=False)
    assert evaluated["metrics"] == trained["metrics"]
    def predictions(folder: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / folder / "predictions.jsonl").read_text().splitlines()]

    assert predictions("eval") == predictions("train")


@pytest.mark.slow
def test_the_eval_command_writes_a_record_that_says_trained_false(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    get_task("vqav2").write_demo(tmp_path / "data" / "vqav2", num_train=4, num_eval=6, seed=0)
    assert main(["eval", str(CHECKPOINT), "--task", "vqav2", "--size", "nano-s", "--resolution", "32",
                 "--data-root", str(tmp_path / "data"), "--workdir", str(tmp_path / "wd"), "--quiet",
                 "--override", "max_eval_examples=6", "--override", "text_len=48"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "wd" / "records").glob("*.json")]
    assert record["extra"]["train"] == {"steps": 0, "trained": False} and record["steps"] == 0
    assert record["config"]["train"] is False and "softcap_policy" in record["extra"]
    assert "| vqav2 |" in capsys.readouterr().out
