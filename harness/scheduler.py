"""Run a grid's cells, resumably: sweep, pick the lr, then the final runs (harness/grid.py protocol).

Workdir layout:
    grid.yaml                  the grid file this workdir was last run with (copied atomically)
    cells/<cell_id>/           the runner's own state (checkpoints, progress) and the cell's lock
    predictions/<cell_id>.jsonl
    records/<cell_id>.json     written last: a record on disk means the cell is done
    best_lr.json               the lr picked per (task, size), and the sweep it was picked from
    prepared/<task>/...        prepared (TFDS) data keyed on the raw files (tasks/prepared.py), unless
                               `--cache-dir` puts it elsewhere

A cell with a record is never run again; a killed cell is simply called again and its runner resumes
from what it left in cells/<cell_id>/. The runner is `runner(cell, cell_dir) -> dict` with at least
{"metrics", "headline", "steps"}; other keys are kept in the record's `extra`.
"""

from __future__ import annotations

import importlib
import json
import numbers
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness import multihost
from harness.grid import Cell, Grid
from harness.locks import CellLock
from harness.provenance import device_info, provenance
from results.tabular import fixed_width
from results.lr_choice import LrChoice, format_lr, select_best_lrs
from results.store import (
    SCHEMA_VERSION,
    Record,
    atomic_write_text,
    has_record,
    jsonable,
    load_records,
    predictions_path,
    read_record,
    record_path,
    versions,
    write_record,
)

BACKENDS = ("local", "ray")
RAY_MAX_RETRIES = 3
BEST_LR_RULE = ("per (task, size), the sweep lr with the highest headline metric on the sweep split; "
                "ties go to the smaller lr; a missing metric never wins (docs/paligemma2-facts.md §3.2)")


OUTCOME = "outcome.json"  # cells/<id>/: the runner's result, kept until its record is written


PARAMS_FILE = "params.npz"  # cells/<id>/: the fine-tuned params (keep_checkpoints params or all)
TRAINING_STATE = "ckpt"  # cells/<id>/: the runner's resumable checkpoint (params + optimizer state)


def apply_keep_checkpoints(directory: Path, keep: str) -> None:
    """Delete what a finished cell does not keep (grid `keep_checkpoints`): `none` keeps neither the
    params nor the training state, `params` keeps PARAMS_FILE, `all` keeps both. Set-aside corrupt
    checkpoints (ckpt.corrupt-*) are never deleted."""
    if keep != "all":
        shutil.rmtree(directory / TRAINING_STATE, ignore_errors=True)
    if keep == "none":
        (directory / PARAMS_FILE).unlink(missing_ok=True)


class RunError(RuntimeError):
    """Cells that failed; each one's traceback is in cells/<cell_id>/error.txt."""


def cell_dir(workdir: str | Path, cell_id: str) -> Path:
    return Path(workdir) / "cells" / cell_id


def load_runner(target: str) -> Callable[[Cell, Path], Mapping[str, Any]]:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RunError(f"runner {target!r} cannot be loaded: {e}") from None


def execute_cell(cell: Cell, workdir: str | Path, runner: str) -> dict[str, Any]:
    """Call the runner in cells/<id>/ and publish its predictions; the caller then writes the record.

    This is what a Ray worker runs, so it takes the runner by name and returns plain data.
    """
    from harness.placement import check_cell

    directory = cell_dir(workdir, cell.cell_id)
    directory.mkdir(parents=True, exist_ok=True)
    check_cell(cell)  # the memory plan against this process's devices: refuse before compiling
    data = raw_data_fingerprint(cell.data_dir)
    start = time.monotonic()
    result = load_runner(runner)(cell, directory)
    wall = time.monotonic() - start
    if not (isinstance(result, Mapping) and isinstance(result.get("metrics"), Mapping)
            and isinstance(result.get("headline"), str) and isinstance(result.get("steps"), numbers.Integral)):
        raise RunError(f"runner {runner} returned {result!r} for {cell.cell_id}; expected a dict with "
                       "'metrics' (a mapping), 'headline' (str) and 'steps' (int)")
    produced = directory / "predictions.jsonl"
    if produced.exists() and multihost.is_primary():
        target = predictions_path(workdir, cell.cell_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(produced, target)
    return {"result": dict(result), "wall_time_s": wall, "device": {**device_info(), "raw_data": data}}


def raw_data_fingerprint(data_dir: str | Path) -> str | None:
    """Names, sizes and mtimes of a task's raw files, hashed (tasks/prepared.py); None when absent."""
    from tasks.prepared import files_fingerprint, raw_files

    return files_fingerprint(raw_files(Path(data_dir)))[:16] if Path(data_dir).is_dir() else None


def warn_changed_data(grid: Grid, workdir: Path) -> None:
    """One line per task whose finished cells were computed on raw files that have changed since: their
    records are kept (the id hashes the data folder, not its content), so say so."""
    try:
        records = load_records(workdir)
    except (OSError, ValueError):
        return  # a corrupt record is reported where it is read
    for task in grid.tasks:
        current = raw_data_fingerprint(grid.data_dir(task))
        stale = [r for r in records if r.task == task and r.config.get("data_dir") == grid.data_dir(task)
                 and r.provenance.get("raw_data") not in (None, current)]
        if stale:
            print(f"{task}: {len(stale)} finished cell(s) were computed on raw files in {grid.data_dir(task)} "
                  "that have changed since; their records are kept (delete them to rerun on the new data)",
                  file=sys.stderr)


def make_record(cell: Cell, outcome: Mapping[str, Any]) -> Record:
    result = outcome["result"]
    metrics = {k: float(v) if isinstance(v, numbers.Real) else v for k, v in result["metrics"].items()}
    return Record(
        cell_id=cell.cell_id, task=cell.task, size=cell.size, resolution=cell.resolution, lr=cell.lr,
        seed=cell.seed, phase=cell.phase, split=cell.split, metrics=metrics,
        headline=result["headline"], steps=int(result["steps"]), wall_time_s=round(outcome["wall_time_s"], 3),
        config_hash=cell.config_hash, config=cell.config(), versions=versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"), demo=cell.demo,
        extra={k: v for k, v in result.items() if k not in ("metrics", "headline", "steps")},
        schema_version=SCHEMA_VERSION, provenance=provenance(outcome.get("device")))


DEMO_MARKER = ".demo.json"


def prepare_demo_data(grid: Grid) -> None:
    """Write demo data for tasks whose data_root/<task> is missing, when the grid has a demo block.

    The folder gets a DEMO_MARKER file with the demo data's identity (sizes, seed, generator version); a
    generated folder whose identity differs from the grid's is generated again (announced on stderr), so
    changing `demo: {num_eval: 8}` changes the data as it changes the cell ids. A folder without the
    marker holds someone's own data and is never touched. Written into a temp folder and renamed into
    place, so a killed run never leaves half a dataset.
    """
    if grid.demo_data is None:
        return
    from harness.grid import demo_identity
    from tasks.registry import get_task

    for task in grid.tasks:
        target = Path(grid.data_dir(task))
        wanted = demo_identity(task, grid.demo_data)
        old = None
        if target.is_dir() and any(target.iterdir()):
            try:
                old = json.loads((target / DEMO_MARKER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not generated by us (or by an older version): leave it alone
            if old == wanted:
                continue
            print(f"{task}: demo data in {target} was generated with {old}; generating it again with "
                  f"{wanted}", file=sys.stderr)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        d = grid.demo_data
        get_task(task).write_demo(tmp, num_train=d.num_train, num_eval=d.num_eval, seed=d.seed)
        (tmp / DEMO_MARKER).write_text(json.dumps(wanted), encoding="utf-8")
        if old is not None:
            trash = target.with_name(f".{target.name}.old-{os.getpid()}")
            try:
                os.rename(target, trash)
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.rename(tmp, target)
        except OSError:  # another scheduler generated it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)


def best_lrs(grid: Grid, workdir: Path) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], LrChoice]]:
    """(lr per (task, size) known so far, the sweep choices), from the grid's own sweep records.

    A swept pair's lr is known once every one of its sweep cells has a record.
    """
    sweep = grid.sweep_cells()
    complete = {(c.task, c.size) for c in sweep} - {
        (c.task, c.size) for c in sweep if not has_record(workdir, c.cell_id)}
    records = [read_record(record_path(workdir, c.cell_id)) for c in sweep if (c.task, c.size) in complete]
    choices = select_best_lrs(records)
    return {**grid.fixed_lrs(), **{pair: ch.lr for pair, ch in choices.items()}}, choices


def write_best_lrs(workdir: Path, grid: Grid, choices: Mapping[tuple[str, str], LrChoice]) -> None:
    data = {"rule": BEST_LR_RULE,
            "swept": [{"task": c.task, "size": c.size, "lr": c.lr, "headline": c.headline,
                       "sweep": [{"lr": lr, "score": s} for lr, s in c.scores]}
                      for c in choices.values()],
            "fixed": [{"task": t, "size": s, "lr": lr} for (t, s), lr in grid.fixed_lrs().items()]}
    atomic_write_text(workdir / "best_lr.json", json.dumps(data, indent=2) + "\n")


@dataclass
class _Phase:
    """Runs one phase's cells under their locks; cells locked by a live process are waited for."""

    workdir: Path
    runner: str
    bar: tqdm
    backend: str
    num_cpus: float
    poll_s: float
    done_before: int = 0  # records of earlier phases, for the progress bar
    data_cache: str = ""  # where runners keep prepared data (Cell.data_cache)
    keep_checkpoints: str = "none"  # Grid.keep_checkpoints, applied when a record is written
    failures: dict[str, str] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    cells: list[Cell] = field(default_factory=list)

    def sync_bar(self) -> None:
        """Progress = records on disk, so cells finished by another scheduler count too."""
        self.bar.n = self.done_before + sum(has_record(self.workdir, c.cell_id) for c in self.cells)
        self.bar.refresh()

    def run(self, cells: list[Cell]) -> None:
        cells = [replace(c, data_cache=self.data_cache, keep_checkpoints=self.keep_checkpoints)
                 for c in cells]
        self.cells = cells
        self.sync_bar()
        for cell in cells:
            lock_path = cell_dir(self.workdir, cell.cell_id) / "lock"
            if lock_path.exists() and has_record(self.workdir, cell.cell_id):
                CellLock(lock_path).clear_if_stale()
        pending = self._agreed([c for c in cells if not has_record(self.workdir, c.cell_id)])
        while pending:
            if self.backend == "ray":
                self._run_ray(pending)
            else:
                self._run_local(pending)
            pending = self._agreed([c for c in pending
                                    if c.cell_id not in self.failures and not has_record(self.workdir, c.cell_id)])
            self.sync_bar()
            if pending:  # locked by another scheduler: wait for its record or for its lock to go stale
                self.bar.set_postfix_str(f"waiting for {len(pending)} locked cell(s)")
                time.sleep(self.poll_s)

    def _agreed(self, pending: list[Cell]) -> list[Cell]:
        """Process 0's list on every process of a multi-host job (the others read nothing themselves)."""
        if not multihost.multi_host():
            return pending
        ids = {c.cell_id for c in pending}
        keep = multihost.agree([c.cell_id in ids for c in self.cells])
        return [c for c, k in zip(self.cells, keep) if k]

    def _claim(self, cell: Cell) -> CellLock | multihost.FollowerLock | None:
        """The cell's lock, or None when the cell is done or a live process holds the lock.

        Multi-host: process 0 takes the lock, the others follow its answer (one cell per pod)."""
        if multihost.multi_host():
            lock = self._claim_one(cell) if multihost.is_primary() else None
            claimed = multihost.agree([lock is not None])[0]
            return (lock if multihost.is_primary() else multihost.FollowerLock()) if claimed else None
        return self._claim_one(cell)

    def _claim_one(self, cell: Cell) -> CellLock | None:
        if has_record(self.workdir, cell.cell_id):
            return None
        lock = CellLock(cell_dir(self.workdir, cell.cell_id) / "lock")
        if not lock.acquire():
            if cell.cell_id not in self.reported:
                self.reported.add(cell.cell_id)
                self.bar.write(f"{cell.cell_id}: locked by {lock.owner()} ({lock.path}); waiting for it")
            return None
        if has_record(self.workdir, cell.cell_id):  # finished by its previous holder
            lock.release()
            return None
        return lock

    def _finish(self, cell: Cell, outcome: Mapping[str, Any] | BaseException, lock: CellLock) -> None:
        """Write the cell's record, or its failure. The runner's outcome is saved first (OUTCOME), so a
        record write that fails (no space left) or is killed leaves what the next run needs to write the
        record without running the cell again."""
        directory = cell_dir(self.workdir, cell.cell_id)
        primary = multihost.is_primary()  # process 0 writes records and error.txt; the others follow
        try:
            if not isinstance(outcome, BaseException):
                if not primary:
                    return
                try:
                    saved = directory / OUTCOME
                    if not saved.exists():
                        atomic_write_text(saved, json.dumps(outcome, default=jsonable))
                    write_record(self.workdir, make_record(cell, outcome))
                    saved.unlink(missing_ok=True)
                    self._keep_checkpoints(directory)
                    self.sync_bar()
                    return
                except OSError as e:
                    outcome = OSError(e.errno, f"the record of {cell.cell_id} was not written ({e.strerror}); "
                                      f"the outcome is kept in {directory / OUTCOME} when it could be saved, "
                                      "and the next run writes the record from it")
            try:
                text = "".join(traceback.format_exception(outcome))
                if primary:
                    atomic_write_text(directory / "error.txt", text)
            except OSError:
                pass  # no space even for the traceback: the one-line message below still says what failed
            cause = getattr(outcome, "cause", None)  # a RayTaskError's original exception
            outcome = cause if isinstance(cause, Exception) else outcome
            message = " ".join(str(outcome).split())  # one line; Ray's errors hold a traceback
            self.failures[cell.cell_id] = f"{type(outcome).__name__}: {message[:300]}"
            self.bar.write(f"{cell.cell_id}: FAILED: {self.failures[cell.cell_id]}")
        finally:
            lock.release()

    def _saved_outcome(self, cell: Cell) -> dict[str, Any] | None:
        """The outcome a previous run saved but could not turn into a record, if any."""
        try:
            data = json.loads((cell_dir(self.workdir, cell.cell_id) / OUTCOME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("result"), dict) else None

    def _keep_checkpoints(self, directory: Path) -> None:
        apply_keep_checkpoints(directory, self.keep_checkpoints)

    def _run_local(self, cells: list[Cell]) -> None:
        for cell in cells:
            lock = self._claim(cell)
            if lock is None:
                continue
            self.bar.set_postfix_str(cell.cell_id)
            saved = self._saved_outcome(cell)
            if saved is not None:  # ran to the end before; only its record is missing
                self._finish(cell, saved, lock)
                continue
            try:
                outcome: Any = execute_cell(cell, self.workdir, self.runner)
            except Exception as e:  # noqa: BLE001 - recorded in error.txt; the phase goes on
                outcome = e
            except BaseException:
                lock.release()
                raise
            self._finish(cell, outcome, lock)

    def _run_ray(self, cells: list[Cell]) -> None:
        """All claimable cells at once; Ray places them. This process holds their locks, so a killed
        driver leaves stale locks on its own host, as the local backend does. Every node must see the
        workdir (a shared filesystem): the runner writes its state and predictions there."""
        from harness.placement import ray_request

        ray = import_ray()
        if not ray.is_initialized():
            ray.init()  # joins the cluster named by RAY_ADDRESS, or starts a local one
        # A worker that dies mid-cell (killed, preempted, out of host memory) is retried up to
        # RAY_MAX_RETRIES times; the retry resumes from the cell's checkpoints in cells/<id>/.
        # An exception the runner raises is not retried: it is the cell's failure.
        remote = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False)(execute_cell)
        nodes = ray.nodes()
        claimed = {}
        for cell in cells:
            lock = self._claim(cell)
            if lock is None:
                continue
            saved = self._saved_outcome(cell)
            if saved is not None:  # ran to the end before; only its record is missing
                self._finish(cell, saved, lock)
                continue
            try:  # the accelerators the cell's memory plan needs (harness/placement.py)
                options = ray_request(cell, nodes, self.num_cpus)
            except Exception as e:  # noqa: BLE001 - CellDoesNotFit, or a bad override: the cell's failure
                self._finish(cell, e, lock)
                continue
            claimed[remote.options(**options).remote(cell, str(self.workdir), self.runner)] = (cell, lock)
        try:
            while claimed:
                self.bar.set_postfix_str(f"{len(claimed)} cell(s) running on Ray")
                (ref,), _ = ray.wait(list(claimed), num_returns=1)
                cell, lock = claimed.pop(ref)
                try:
                    outcome: Any = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a RayTaskError wrapping the runner's error
                    outcome = e
                self._finish(cell, outcome, lock)
        finally:
            for ref, (_, lock) in claimed.items():
                ray.cancel(ref, force=True)
                lock.release()


def import_ray():
    try:
        import ray
    except ImportError:
        raise RunError("backend 'ray' needs Ray: pip install -e '.[ray]'") from None
    return ray


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


class _Costs:
    """Steps, batch and training FLOPs of a (task, size, resolution), from overrides or the recipe.
    Epoch recipes get their steps from the train role's size (harness/dataset_sizes.py)."""

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
            from harness.dataset_sizes import train_size
            from tasks.registry import get_task

            self.sizes[task] = train_size(get_task(task), self.grid.data_dir(task), self.cache_dir)
        return self.sizes[task][0]

    def _compute(self, task: str, size: str, resolution: int) -> tuple[str, int, float | None]:
        from model.config import config_for
        from model.cost import flops_per_example

        ov = dict(self.grid.overrides[task])
        if not ({"batch_size", "text_len"} <= set(ov) and ("steps" in ov or "epochs" in ov)):
            from tasks.registry import get_task

            recipe = get_task(task).recipe(size, resolution)
            base = {"batch_size": recipe.batch_size, "text_len": recipe.text_len}
            if "steps" not in ov and "epochs" not in ov:  # an override of either replaces both
                base.update(steps=recipe.steps, epochs=recipe.epochs)
            ov = {**base, **ov}
        batch, text_len = int(ov["batch_size"]), int(ov["text_len"])
        if ov.get("steps") is None:
            n = self.train_size(task)
            if n is None:
                return f"{ov['epochs']:g} ep", batch, None
            steps = max(1, round(float(ov["epochs"]) * n / batch))  # Recipe.num_steps
        else:
            steps = int(ov["steps"])
        return str(steps), batch, steps * batch * flops_per_example(config_for(size, resolution), text_len)


def plan_rows(grid: Grid, workdir: str | Path, cache_dir: str | Path | None = None,
              costs: _Costs | None = None) -> list[PlanRow]:
    """Every cell of the grid with its status and cost; reads the workdir, writes nothing."""
    workdir = Path(workdir)
    costs = costs if costs is not None else _Costs(grid, cache_dir if cache_dir is not None else workdir / "prepared")
    lrs, _ = best_lrs(grid, workdir)

    def status(cell: Cell) -> str:
        if has_record(workdir, cell.cell_id):
            return "done"
        owner = CellLock(cell_dir(workdir, cell.cell_id) / "lock").owner()
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


def plan_warnings(grid: Grid, costs: _Costs | None = None) -> list[str]:
    """One line per missing base checkpoint or tokenizer (their cells' ids change once they exist), and
    per epoch-recipe task whose data size is not known (its FLOPs are left out of the totals)."""
    from harness.fingerprint import MISSING
    from harness.recipes import tokenizer_path

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
    return "\n".join([summary, kept] + per_task + ["", fixed_width(header, table)])


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def run_grid(grid: Grid, workdir: str | Path, *, backend: str = "local", dry_run: bool = False,
             progress: bool = True, num_cpus_per_cell: float = 1, poll_s: float = 2.0,
             cache_dir: str | Path | None = None) -> list[Record]:
    """Run (or with dry_run, list) every cell of `grid` in `workdir`; returns the grid's records.

    Safe to call again after a crash or on a grid with cells added: finished cells are skipped.
    A dry run prints the plan with cost estimates and writes nothing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    workdir = Path(workdir)
    if dry_run:
        costs = _Costs(grid, cache_dir if cache_dir is not None else workdir / "prepared")
        print(format_plan(grid, plan_rows(grid, workdir, costs=costs)))
        for line in plan_warnings(grid, costs):
            print(line, file=sys.stderr)
        return _records(workdir, grid.sweep_cells() + grid.final_cells(best_lrs(grid, workdir)[0]))
    if backend == "ray":
        if multihost.multi_host():
            raise RunError("a multi-host job runs its cells itself (--backend local); Ray places "
                           "single-host cells")
        import_ray()
    load_runner(grid.runner)  # fail now, not once per cell
    primary = multihost.is_primary()
    if primary:
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(workdir / "grid.yaml", grid.text)
        prepare_demo_data(grid)
        warn_changed_data(grid, workdir)
    multihost.barrier("grid prepared")

    sweep = grid.sweep_cells()
    total = len(sweep) + len(grid.final_plan())
    with tqdm(total=total, unit="cell", desc=grid.name, disable=not progress, file=sys.stderr) as bar:
        phase = _Phase(workdir, grid.runner, bar, backend, num_cpus_per_cell, poll_s,
                       data_cache=str(Path(cache_dir) if cache_dir is not None else workdir / "prepared"),
                       keep_checkpoints=grid.keep_checkpoints)
        phase.run(sweep)
        _raise_failures(phase, workdir, "sweep")
        multihost.barrier("sweep recorded")  # process 0's records are on disk for every process
        lrs, choices = best_lrs(grid, workdir)
        if primary:
            write_best_lrs(workdir, grid, choices)
        final = grid.final_cells(lrs)
        phase.done_before = len(sweep)
        phase.run(final)
        _raise_failures(phase, workdir, "final")
        multihost.barrier("final recorded")
    return _records(workdir, sweep + final)


def _raise_failures(phase: _Phase, workdir: Path, name: str) -> None:
    if phase.failures:
        lines = "; ".join(f"{cid}: {msg}" for cid, msg in phase.failures.items())
        raise RunError(f"{len(phase.failures)} {name} cell(s) failed (tracebacks in "
                       f"{workdir / 'cells'}/<cell_id>/error.txt): {lines}")


def _records(workdir: Path, cells: Iterable[Cell]) -> list[Record]:
    return [read_record(record_path(workdir, c.cell_id)) for c in cells if has_record(workdir, c.cell_id)]
