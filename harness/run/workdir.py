"""A grid's workdir: the one place that knows its layout.

    grid.yaml                  the grid file this workdir was last run with (copied atomically)
    cells/<cell_id>/           the runner's own state (checkpoints, progress, outcome.json, error.txt)
                               and the cell's lock
    predictions/<cell_id>.jsonl
    records/<cell_id>.json     written last: a record on disk means the cell is done
    best_lr.json               the lr picked per (task, size), and the sweep it was picked from
    grid_cells.json            the cells of the grid last run here (what `tables` reports)
    tables/                    tables and plots of the grid's records (results/tables.py)

Records and predictions are read and written through results/store.py, which holds their two folder
names; everything else is named here. The root is a local folder or a bucket URL (gs://bucket/run):
results/paths.py's `as_path` gives each the path object that reaches it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

from harness.run.grid import Grid
from results.lr_choice import LrChoice, select_best_lrs
from results.paths import AnyPath, as_path
from results.store import atomic_write_text, has_record, predictions_path, read_record, record_path

BEST_LR_RULE = ("per (task, size, sweep resolution), the sweep lr with the highest headline metric on the sweep split; "
                "ties go to the smaller lr; a missing metric never wins (docs/paligemma2-facts.md §3.2)")
OUTCOME = "outcome.json"  # cells/<id>/: the runner's result, kept until its record is written
PARAMS_FILE = "params.npz"  # cells/<id>/: the fine-tuned params (keep_checkpoints params or all)
TRAINING_STATE = "ckpt"  # cells/<id>/: the runner's resumable checkpoint (params + optimizer state)
ERROR_FILE = "error.txt"  # cells/<id>/: the traceback of the cell's last failure


@dataclass(frozen=True)
class Workdir:
    """Paths of one workdir; creates nothing."""

    root: AnyPath

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", as_path(root))

    @property
    def grid_file(self) -> AnyPath:
        return self.root / "grid.yaml"

    @property
    def best_lr_file(self) -> AnyPath:
        return self.root / "best_lr.json"

    @property
    def grid_cells_file(self) -> AnyPath:
        return self.root / "grid_cells.json"

    @property
    def tables(self) -> AnyPath:
        return self.root / "tables"

    @property
    def cells(self) -> AnyPath:
        return self.root / "cells"

    def cell(self, cell_id: str) -> AnyPath:
        return self.cells / cell_id

    def lock(self, cell_id: str) -> AnyPath:
        return self.cell(cell_id) / "lock"

    def error(self, cell_id: str) -> AnyPath:
        return self.cell(cell_id) / ERROR_FILE

    def outcome(self, cell_id: str) -> AnyPath:
        return self.cell(cell_id) / OUTCOME

    def record(self, cell_id: str) -> AnyPath:
        return record_path(self.root, cell_id)

    def predictions(self, cell_id: str) -> AnyPath:
        return predictions_path(self.root, cell_id)

    def done(self, cell_id: str) -> bool:
        return has_record(self.root, cell_id)


def cell_dir(workdir: str | os.PathLike, cell_id: str) -> AnyPath:
    return Workdir(workdir).cell(cell_id)


def best_lrs(grid: Grid, workdir: str | os.PathLike) -> tuple[dict[tuple, float], dict[tuple[str, str, int], LrChoice]]:
    """(lr per (task, size) without a sweep and per (task, size, sweep resolution) whose sweep is complete,
    the sweep choices by the same keys), from the grid's own sweep records (Grid.final_lr reads it).

    A sweep point's lr is known once every one of its sweep cells has a record.
    """
    wd = Workdir(workdir)
    sweep = grid.sweep_cells()
    incomplete = {(c.task, c.size, c.resolution) for c in sweep if not wd.done(c.cell_id)}
    choices: dict[tuple[str, str, int], LrChoice] = {}
    for point in grid.sweep_points():
        if point in incomplete:
            continue
        records = [read_record(wd.record(c.cell_id)) for c in sweep if (c.task, c.size, c.resolution) == point]
        for (task, size), choice in select_best_lrs(records).items():
            choices[task, size, point[2]] = choice
    return {**grid.fixed_lrs(), **{key: ch.lr for key, ch in choices.items()}}, choices


def write_best_lrs(workdir: str | os.PathLike, grid: Grid, choices: Mapping[tuple[str, str, int], LrChoice]) -> None:
    data = {"rule": BEST_LR_RULE,
            "swept": [{"task": t, "size": s, "sweep_resolution": r, "lr": c.lr, "headline": c.headline,
                       "used_at": [res for res in grid.protocol.final_resolutions
                                   if grid.sweep_resolution(t, s, res) == r],
                       "sweep": [{"lr": lr, "score": score} for lr, score in c.scores]}
                      for (t, s, r), c in choices.items()],
            "fixed": [{"task": t, "size": s, "lr": lr} for (t, s), lr in grid.fixed_lrs().items()]}
    atomic_write_text(Workdir(workdir).best_lr_file, json.dumps(data, indent=2) + "\n")


GRID_CELL_FIELDS = ("cell_id", "task", "size", "resolution", "lr", "seed", "phase")


def write_grid_cells(workdir: str | os.PathLike, cells: Iterable) -> None:
    """The grid's cells as far as they are known (final cells once their lr is), for `tables`: a table
    reports exactly these cells' records, never a record of another configuration of the same place."""
    rows = [{k: getattr(c, k) for k in GRID_CELL_FIELDS} for c in cells]
    atomic_write_text(Workdir(workdir).grid_cells_file, json.dumps(rows, indent=1) + "\n")


def read_grid_cells(workdir: str | os.PathLike) -> list[SimpleNamespace] | None:
    """The cells `write_grid_cells` left, or None for a workdir without the file."""
    path = Workdir(workdir).grid_cells_file
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); run the grid again to rewrite it") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and set(GRID_CELL_FIELDS) <= set(r) for r in rows):
        raise ValueError(f"{path}: expected a list of cells with {', '.join(GRID_CELL_FIELDS)}")
    return [SimpleNamespace(**{k: r[k] for k in GRID_CELL_FIELDS}) for r in rows]
