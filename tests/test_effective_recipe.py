"""One function computes a cell's effective recipe (harness/cell/recipe.py): an edit to a plugin's recipe
reaches the cell id, the memory check, the dry run's steps and FLOPs, and the run itself, together."""

from __future__ import annotations

import dataclasses

import pytest

from harness.cell import run_cell as run_cell_module
from harness.cell.memory_check import cell_shape
from harness.run.grid import load_grid
from harness.run.plan import Costs
from tasks.registry import get_task

GRID = """\
name: eff
demo: {{num_train: 8, num_eval: 4, seed: 0}}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
data_root: {data}
checkpoints: random
"""


class _Stop(Exception):
    pass


def _seen(tmp_path, monkeypatch) -> dict:
    """What each of the four readers sees for the grid's one cell."""
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data"))
    grid = load_grid(path)
    cell = grid.final_cells({("vqav2", "nano-s"): 1e-3})[0]
    shape = cell_shape(cell)
    steps, batch, flops, _ = Costs(grid)("vqav2", "nano-s", 32)
    trained = {}

    def fake_train(config, params, batches, cfg, **kwargs):
        trained.update(num_steps=cfg.num_steps, lr=cfg.lr, weight_decay=cfg.weight_decay)
        raise _Stop

    monkeypatch.setattr(run_cell_module, "train", fake_train)
    monkeypatch.setattr(run_cell_module, "base_params", lambda *a, **k: {})
    get_task("vqav2").write_demo(tmp_path / "data" / "vqav2", num_train=8, num_eval=4, seed=0) \
        if not (tmp_path / "data" / "vqav2").exists() else None
    with pytest.raises(_Stop):
        run_cell_module.run_cell(dataclasses.replace(cell, data_cache=str(tmp_path / "prep")), tmp_path / "cell",
                                 progress=False)
    return {"id": cell.cell_id, "shape_batch": shape.batch_size, "shape_text_len": shape.text_len,
            "plan_steps": steps, "plan_batch": batch, "plan_flops": flops, "run_steps": trained["num_steps"],
            "run_weight_decay": trained["weight_decay"]}


def test_a_recipe_edit_reaches_identity_memory_check_dry_run_and_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    task_type = type(get_task("vqav2"))
    original = task_type.recipe
    before = _seen(tmp_path, monkeypatch)

    def edited(self, size, resolution):
        return original(self, size, resolution).replace(steps=7, epochs=None, batch_size=4, weight_decay=0.5)

    monkeypatch.setattr(task_type, "recipe", edited)
    after = _seen(tmp_path, monkeypatch)
    assert after["id"] != before["id"]
    assert (after["shape_batch"], after["plan_batch"]) == (4, 4)
    assert (after["plan_steps"], after["run_steps"]) == ("7", 7)
    assert after["run_weight_decay"] == 0.5
    assert after["plan_flops"] != before["plan_flops"]


def test_bad_override_values_fail_at_load_naming_the_line(tmp_path):
    from harness.run.grid import GridError

    for value, message in [("-6", "steps"), ("0", "batch_size"), ("long", "text_len")]:
        key = message
        path = tmp_path / f"{key}.yaml"
        path.write_text(GRID.format(data=tmp_path / "data") + f"overrides:\n  vqav2: {{{key}: {value}}}\n")
        with pytest.raises(GridError, match=rf"{path}:10: overrides\.vqav2\.{key}: "):
            load_grid(path)
