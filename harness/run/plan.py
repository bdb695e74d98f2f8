"""The dry run: every cell of a grid with its status, steps, batch, training FLOPs and kept disk, and
what is missing (checkpoints, tokenizers, data sizes). Reads the workdir, writes nothing. Steps and
FLOPs come from each cell's effective recipe (harness/cell/recipe.py), as the run computes them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.cell.recipe import effective
from harness.run.grid import Cell, Grid
from harness.run.locks import open_lock
from harness.run.workdir import best_lrs, cell_dir
from results.lr_choice import format_lr
from results.paths import as_path
from results.store import has_record
from results.tabular import fixed_width


@dataclass(frozen=True)
class PlanRow:
    """One line of a dry run. A final cell whose lr awaits the sweep has no id yet."""

    phase: str
    cell_id: str
    task: str
    size: str
    resolution: int
    lr: str
    seed: int
    split: str
    status: str  # done | locked by host:pid | todo | after sweep
    steps: str  # "400", or "3 ep" for an epoch recipe whose data size is unknown
    batch: int
    flops: float | None  # training FLOPs of the cell (model/cost.py), None when steps are unknown
    disk: int = 0  # bytes the finished cell keeps (grid keep_checkpoints)


def kept_bytes(size: str, resolution: int, keep: str) -> int:
    """Disk a finished cell keeps: float32 params for `params`; for `all` also the last training
    checkpoint (params + Adam's two moments, float32)."""
    from model.config import config_for
    from model.cost import param_count

    n = param_count(config_for(size, resolution))
    return {"none": 0, "params": 4 * n, "all": 4 * n + 12 * n}[keep]


class Costs:
    """Steps, batch and training FLOPs of a (task, size, resolution), from overrides or the recipe.
    Epoch recipes get their steps from the train role's size (harness/run/dataset_sizes.py)."""

    def __init__(self, grid: Grid, cache_dir: str | Path | None = None):
        self.grid, self.cache, self.cache_dir = grid, {}, cache_dir
        self.sizes: dict[str, tuple[int | None, str]] = {}  # task -> (train size, its source)

    def __call__(self, task: str, size: str, resolution: int) -> tuple[str, int, float | None, int]:
        key = (task, size, resolution)
        if key not in self.cache:
            self.cache[key] = (*self._compute(*key), kept_bytes(size, resolution, self.grid.keep_checkpoints))
        return self.cache[key]

    def train_size(self, task: str) -> int | None:
        if task not in self.sizes:
            from harness.run.dataset_sizes import train_size
            from tasks.registry import get_task

            self.sizes[task] = train_size(get_task(task), self.grid.data_dir(task), self.cache_dir)
        return self.sizes[task][0]

    def _compute(self, task: str, size: str, resolution: int) -> tuple[str, int, float | None]:
        """From the cell's effective recipe (harness/cell/recipe.py), the one the run trains with."""
        from model.cost import flops_per_example

        lrs = self.grid.lrs[task, size]
        if not self.grid.train:  # eval-only: nothing is trained
            recipe = effective(task, size, resolution, lrs[0], dict(self.grid.overrides[task])).recipe
            return "0", recipe.batch_size, 0.0
        eff = effective(task, size, resolution, lrs[0], dict(self.grid.overrides[task]))
        batch, text_len = eff.recipe.batch_size, eff.recipe.text_len
        steps = eff.num_steps(None if eff.recipe.steps is not None else self.train_size(task))
        if steps is None:
            return f"{eff.recipe.epochs:g} ep", batch, None
        return str(steps), batch, steps * batch * flops_per_example(eff.model_config, text_len)


def plan_rows(grid: Grid, workdir: str | os.PathLike, cache_dir: str | Path | None = None,
              costs: Costs | None = None) -> list[PlanRow]:
    """Every cell of the grid with its status and cost; reads the workdir, writes nothing."""
    workdir = as_path(workdir)
    costs = costs if costs is not None else Costs(grid, cache_dir)
    lrs, _ = best_lrs(grid, workdir)

    def status(cell: Cell) -> str:
        if has_record(workdir, cell.cell_id):
            return "done"
        owner = open_lock(cell_dir(workdir, cell.cell_id) / "lock").owner()
        return f"locked by {owner}" if owner is not None and owner.alive() else "todo"

    rows = [PlanRow(c.phase, c.cell_id, c.task, c.size, c.resolution, format_lr(c.lr), c.seed, c.split,
                    status(c), *costs(c.task, c.size, c.resolution))
            for c in grid.sweep_cells()]
    known = {(c.task, c.size, c.resolution, c.seed): c for c in grid.final_cells(lrs)}
    for t, s, r, seed in grid.final_plan():
        cell = known.get((t, s, r, seed))
        if cell is not None:
            rows.append(PlanRow("final", cell.cell_id, t, s, r, format_lr(cell.lr), seed, cell.split,
                                status(cell), *costs(t, s, r)))
        else:
            rows.append(PlanRow("final", "-", t, s, r, "best of sweep", seed, grid.protocol.final_split,
                                "after sweep", *costs(t, s, r)))
    return rows


def plan_warnings(grid: Grid, costs: Costs | None = None) -> list[str]:
    """One line per missing base checkpoint or tokenizer (their cells' ids change once they exist), per
    missing data folder, and per epoch-recipe task whose data size is not known (its FLOPs are left out of
    the totals)."""
    from harness.cell.fingerprint import MISSING
    from harness.cell.recipe import tokenizer_path

    lines, seen = [], set()
    cells = grid.sweep_cells() + grid.final_cells({key: lrs[0] for key, lrs in grid.lrs.items()})
    for cell in cells:
        ident = dict(cell.identity)
        if ident.get("checkpoint_sha256") == f'"{MISSING}"' and ("ckpt", cell.checkpoint) not in seen:
            seen.add(("ckpt", cell.checkpoint))
            lines.append(f"warning: base checkpoint {cell.checkpoint} does not exist (size {cell.size}, "
                         f"resolution {cell.resolution}); ids of its cells change once it does")
        tok = tokenizer_path(cell.size, dict(cell.overrides))
        if ident.get("tokenizer_sha256") == f'"{MISSING}"' and ("tok", tok) not in seen:
            seen.add(("tok", tok))
            lines.append(f"warning: tokenizer {tok or '(none set)'} does not exist" + (
                "" if tok else f" (size {cell.size} needs overrides.tokenizer)"))
    for task in grid.tasks:
        folder = Path(grid.data_dir(task))
        if grid.demo_data is None and not (folder.is_dir() and any(folder.iterdir())):
            lines.append(f"warning: {task}: data folder {folder} is missing or empty (data_root/<task> must "
                         f"hold the task's official raw files; `paligemma-transfer tasks` lists what each needs)")
    if costs is not None:
        for task, (n, source) in sorted(costs.sizes.items()):
            lines.append(f"note: {task} train size {n:,} examples, {source}" if n is not None
                         else f"warning: {task} train size unknown ({source}); its epoch-recipe FLOPs are "
                         "left out of the totals")
    return lines


def format_plan(grid: Grid, rows: list[PlanRow]) -> str:
    """A fixed-width table of the plan, with totals of what is left to run."""
    header = ("phase", "cell id", "task", "size", "res", "lr", "seed", "split", "steps", "batch",
              "train FLOPs", "status")
    table = [(r.phase, r.cell_id, r.task, r.size, str(r.resolution), r.lr, str(r.seed), r.split, r.steps,
              str(r.batch), "-" if r.flops is None else f"{r.flops:.2e}", r.status) for r in rows]
    left = [r for r in rows if r.status != "done"]
    flops = sum(r.flops for r in left if r.flops is not None)
    unknown = sum(r.flops is None for r in left)
    scale = " [demo scale]" if grid.demo else ""
    summary = (f"{grid.name}{scale}: {len(rows)} cells ({sum(r.phase == 'sweep' for r in rows)} sweep, "
               f"{sum(r.phase == 'final' for r in rows)} final), {len(rows) - len(left)} done; "
               f"left to run: {len(left)} cells, {flops:.2e} training FLOPs"
               + (f" (+{unknown} cells with epoch recipes: steps depend on the data size)" if unknown else ""))
    per_task = ["", "left to run per task:"]
    for task in grid.tasks:
        mine = [r for r in left if r.task == task]
        known = [r.flops for r in mine if r.flops is not None]
        flops_text = f"{sum(known):.2e} training FLOPs" if known else "training FLOPs unknown"
        if known and len(known) < len(mine):
            flops_text += f" (+{len(mine) - len(known)} cells of unknown size)"
        per_task.append(f"  {task}: {len(mine)} cells, {flops_text}")
    disk = sum(r.disk for r in rows)
    kept = (f"disk kept by finished cells (keep_checkpoints: {grid.keep_checkpoints}): {_gb(disk)} "
            "besides records and predictions")
    return "\n".join([summary, kept] + per_task + [""] + sweep_lines(grid) + ["", fixed_width(header, table)])


def sweep_lines(grid: Grid) -> list[str]:
    """Per task and size: which lrs, where they are swept and at which resolutions the pick is used."""
    from harness.run.grid import plugin_lrs

    lines = ["how each task picks its lr (protocol.sweep: split "
             f"{grid.protocol.sweep_split}, seed {grid.protocol.sweep_seed}):"]
    finals = grid.protocol.final_resolutions
    for task in grid.tasks:
        for size in grid.sizes:
            lrs = grid.lrs[task, size]
            source = ("the plugin's lr_grid" if lrs == plugin_lrs(task, size, grid.protocol.sweep_resolution)
                      else "the grid's lrs")
            listed = ", ".join(format_lr(lr) for lr in lrs)
            if not grid.swept(task, size):
                lines.append(f"  {task} {size}: one lr {listed} ({source}): no sweep")
                continue
            by_sweep: dict[int, list[int]] = {}
            for res in finals:
                by_sweep.setdefault(grid.sweep_resolution(task, size, res), []).append(res)
            where = "; ".join(f"swept at {r} px, used at {', '.join(map(str, used))}"
                              for r, used in sorted(by_sweep.items()))
            if len(by_sweep) == len(finals) > 1 and all(r == used[0] for r, used in by_sweep.items()):
                where = "re-swept at every resolution (" + ", ".join(map(str, finals)) + ")"
            lines.append(f"  {task} {size}: {len(lrs)} lrs [{listed}] ({source}), {where}")
    return lines


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
