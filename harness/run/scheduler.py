"""Run a grid's cells, resumably: sweep, pick the lr, then the final runs (harness/run/grid.py protocol).

The workdir's layout is harness/run/workdir.py's; it is a local folder or a bucket URL (gs://bucket/run,
reached through results/paths.py). A cell with a record is never run again; a killed cell
is simply called again and its runner resumes from what it left in cells/<cell_id>/. The runner is
`runner(cell, cell_dir) -> dict` with at least {"metrics", "headline", "steps"}; other keys are kept in the
record's `extra`. A runner may carry `check(cell)`, called before it runs (the default runner's is its
memory plan, harness/cell/memory_check.py).
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness.cell.checkpoints import SHARDED_PARAMS
from harness.run import multihost
from harness.run.demo_data import prepare_demo_data
from harness.run.grid import Cell, Grid
from harness.run.locks import CellLock, ObjectStoreLock, open_lock
from harness.run.plan import Costs, format_plan, plan_rows, plan_warnings
from harness.run.provenance import device_info, provenance
from harness.run.workdir import (  # noqa: F401 - BEST_LR_RULE, PARAMS_FILE, TRAINING_STATE: the layout's names
    BEST_LR_RULE,
    ERROR_FILE,
    OUTCOME,
    PARAMS_FILE,
    TRAINING_STATE,
    best_lrs,
    cell_dir,
    write_best_lrs,
    write_grid_cells,
)
from results.paths import AnyPath, append_text, as_path, is_remote, make_dirs, move_file, remove_tree
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


def apply_keep_checkpoints(directory: AnyPath, keep: str) -> None:
    """Delete what a finished cell does not keep (grid `keep_checkpoints`): `none` keeps neither the
    params nor the training state, `params` keeps PARAMS_FILE (from a multi-host cell: the orbax
    folder SHARDED_PARAMS), `all` keeps both. Set-aside corrupt
    checkpoints (ckpt.corrupt-*) are never deleted."""
    if keep != "all":
        remove_tree(directory / TRAINING_STATE)
    if keep == "none":
        (directory / PARAMS_FILE).unlink(missing_ok=True)
        remove_tree(directory / SHARDED_PARAMS)


class RunError(RuntimeError):
    """Cells that failed; each one's traceback is in cells/<cell_id>/error.txt."""


def load_runner(target: str) -> Callable[[Cell, AnyPath], Mapping[str, Any]]:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RunError(f"runner {target!r} cannot be loaded: {e}") from None


def execute_cell(cell: Cell, workdir: str | os.PathLike, runner: str) -> dict[str, Any]:
    """Call the runner in cells/<id>/ and publish its predictions; the caller then writes the record.

    This is what a Ray worker runs, so it takes the runner by name and returns plain data.
    """
    directory = cell_dir(workdir, cell.cell_id)
    make_dirs(directory)
    run = load_runner(runner)
    check = getattr(run, "check", None)  # the runner's own check (the default: its memory plan)
    if callable(check):
        check(cell)  # refuse before compiling
    data = raw_data_fingerprint(cell.data_dir)
    start = time.monotonic()
    result = run(cell, directory)
    wall = time.monotonic() - start
    if not (isinstance(result, Mapping) and isinstance(result.get("metrics"), Mapping)
            and isinstance(result.get("headline"), str) and isinstance(result.get("steps"), numbers.Integral)):
        raise RunError(f"runner {runner} returned {result!r} for {cell.cell_id}; expected a dict with "
                       "'metrics' (a mapping), 'headline' (str) and 'steps' (int)")
    bad = {k: v for k, v in result["metrics"].items()
           if isinstance(v, numbers.Real) and not math.isfinite(float(v))}
    if bad:  # a NaN is never a score (a table would print it as a number, or as 0.0)
        raise RunError(f"{cell.cell_id}: the runner's metrics {bad} are not finite numbers; no record written")
    produced = directory / "predictions.jsonl"
    if produced.exists() and multihost.is_primary():
        move_file(produced, predictions_path(workdir, cell.cell_id))
    return {"result": dict(result), "wall_time_s": wall, "device": {**device_info(), "raw_data": data}}


def raw_data_fingerprint(data_dir: str | Path) -> str | None:
    """The content key of a task's raw files (tasks/prepared.py: names, sizes and the bytes of every
    annotation file), the one the prepared-data cache uses; None when absent. A copied or moved folder
    keeps its key."""
    from tasks.prepared import content_files, content_key, data_cache

    return content_key(content_files(Path(data_dir), data_cache(None))) if Path(data_dir).is_dir() else None


def warn_changed_data(grid: Grid, workdir: AnyPath) -> None:
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


@dataclass
class _Phase:
    """Runs one phase's cells under their locks; cells locked by a live process are waited for."""

    workdir: AnyPath
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
                open_lock(lock_path).clear_if_stale()
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

    def _claim(self, cell: Cell) -> CellLock | ObjectStoreLock | multihost.FollowerLock | None:
        """The cell's lock, or None when the cell is done or a live process holds the lock.

        Multi-host: process 0 takes the lock, the others follow its answer (one cell per pod)."""
        if multihost.multi_host():
            lock = self._claim_one(cell) if multihost.is_primary() else None
            claimed = multihost.agree([lock is not None])[0]
            return (lock if multihost.is_primary() else multihost.FollowerLock()) if claimed else None
        return self._claim_one(cell)

    def _claim_one(self, cell: Cell) -> CellLock | ObjectStoreLock | None:
        if has_record(self.workdir, cell.cell_id):
            return None
        lock = open_lock(cell_dir(self.workdir, cell.cell_id) / "lock")
        if not lock.acquire():
            if cell.cell_id not in self.reported:
                self.reported.add(cell.cell_id)
                self.bar.write(f"{cell.cell_id}: locked by {lock.owner()} ({lock.path}); waiting for it")
            return None
        if has_record(self.workdir, cell.cell_id):  # finished by its previous holder
            lock.release()
            return None
        if multihost.multi_host():  # error.txt is created afresh by this attempt's first failure
            (cell_dir(self.workdir, cell.cell_id) / ERROR_FILE).unlink(missing_ok=True)
        return lock

    def _finish(self, cell: Cell, outcome: Mapping[str, Any] | BaseException,
                lock: CellLock | ObjectStoreLock | multihost.FollowerLock) -> None:
        """Write the cell's record, or its failure. The runner's outcome is saved first (OUTCOME), so a
        record write that fails (no space left) or is killed leaves what the next run needs to write the
        record without running the cell again."""
        directory = cell_dir(self.workdir, cell.cell_id)
        primary = multihost.is_primary()  # process 0 writes records; the process that failed, error.txt
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
            unwritten = write_error(directory / ERROR_FILE, outcome)
            cause = getattr(outcome, "cause", None)  # a RayTaskError's original exception
            outcome = cause if isinstance(cause, Exception) else outcome
            message = " ".join(str(outcome).split())  # one line; Ray's errors hold a traceback
            where = multihost.describe()
            self.failures[cell.cell_id] = (f"{where + ': ' if where else ''}{type(outcome).__name__}: "
                                           f"{message[:300]}{unwritten}")
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

    def _keep_checkpoints(self, directory: AnyPath) -> None:
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
            except Exception as e:  # noqa: BLE001 - recorded in error.txt; the phase goes on (one host)
                outcome = e
            except BaseException:
                lock.release()
                raise
            self._finish(cell, outcome, lock)
            if multihost.multi_host():
                self._end_of_cell(cell)

    def _end_of_cell(self, cell: Cell) -> None:
        """Multi-host: a process whose cell failed ends the job now, without entering another collective
        (the others may still be inside the cell's); the others check here that every process finished
        the cell (a process that failed or died makes this barrier fail) before the next collective."""
        if cell.cell_id in self.failures:
            raise RunError(f"{cell.cell_id} failed on {self.failures[cell.cell_id]} (traceback in "
                           f"{cell_dir(self.workdir, cell.cell_id) / ERROR_FILE}); the job stops on every "
                           "process, and the rerun resumes")
        try:
            multihost.barrier(f"cell done {cell.cell_id}")
        except Exception as e:  # noqa: BLE001 - a process that failed has left the job
            reason = " ".join(str(e).split())[:200]
            raise RunError(f"{cell.cell_id}: another process of the job failed or died ({reason}); "
                           f"its error is in {cell_dir(self.workdir, cell.cell_id) / ERROR_FILE} when it could "
                           "write one; the rerun resumes") from None

    def _run_ray(self, cells: list[Cell]) -> None:
        """All claimable cells at once; Ray places them. This process holds their locks, so a killed
        driver leaves stale locks on its own host, as the local backend does. Every node must see the
        workdir (a shared filesystem): the runner writes its state and predictions there."""
        from harness.run.placement import ray_request

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
            try:  # the accelerators the cell's memory plan needs (harness/run/placement.py)
                options = ray_request(cell, nodes, self.num_cpus,
                                      planned=callable(getattr(load_runner(self.runner), "check", None)))
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


def run_grid(grid: Grid, workdir: str | os.PathLike, *, backend: str = "local", dry_run: bool = False,
             progress: bool = True, num_cpus_per_cell: float = 1, poll_s: float = 2.0,
             cache_dir: str | Path | None = None) -> list[Record]:
    """Run (or with dry_run, list) every cell of `grid` in `workdir`; returns the grid's records.

    Safe to call again after a crash or on a grid with cells added: finished cells are skipped.
    A dry run prints the plan with cost estimates and writes nothing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    workdir = as_path(workdir)
    if dry_run:
        costs = Costs(grid, cache_dir)
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
        make_dirs(workdir)
        atomic_write_text(workdir / "grid.yaml", grid.text)
        prepare_demo_data(grid)
        warn_changed_data(grid, workdir)
        write_grid_cells(workdir, grid.sweep_cells() + grid.final_cells(best_lrs(grid, workdir)[0]))
    multihost.barrier("grid prepared")

    sweep = grid.sweep_cells()
    total = len(sweep) + len(grid.final_plan())
    with tqdm(total=total, unit="cell", desc=grid.name, disable=not progress, file=sys.stderr) as bar:
        phase = _Phase(workdir, grid.runner, bar, backend, num_cpus_per_cell, poll_s,
                       data_cache=str(cache_dir) if cache_dir is not None else "",
                       keep_checkpoints=grid.keep_checkpoints)
        phase.run(sweep)
        _raise_failures(phase, workdir, "sweep")
        multihost.barrier("sweep recorded")
        # Process 0 reads the sweep's records and chooses; the others take its lrs, so every process runs
        # the same final cells whatever a shared filesystem's caches show them.
        lrs: dict[tuple, float] = {}
        if primary:
            lrs, choices = best_lrs(grid, workdir)
            write_best_lrs(workdir, grid, choices)
            write_grid_cells(workdir, sweep + grid.final_cells(lrs))
        chosen = multihost.broadcast_json([[list(key), lr] for key, lr in lrs.items()])
        lrs = {tuple(key): float(lr) for key, lr in chosen}
        final = grid.final_cells(lrs)
        phase.done_before = len(sweep)
        phase.run(final)
        _raise_failures(phase, workdir, "final")
        multihost.barrier("final recorded")
    return _records(workdir, sweep + final)


def write_error(path: AnyPath, error: BaseException) -> str:
    """The failure's traceback into the cell's error.txt, headed by the process that failed in a multi-host
    job; '' when written, else a note for the one-line message (no space left even for the traceback).

    In a multi-host job the first process to fail creates the file and a process that fails after it (its
    collectives broke because the first one left) adds one line, so the cause is recorded once. On an
    object store (no exclusive create, no append) the file is read and written back whole."""
    text = "".join(traceback.format_exception(error))
    where = multihost.describe()
    try:
        if not where:
            atomic_write_text(path, text)
            return ""
        then = f"\nthen {where}: {type(error).__name__}: {' '.join(str(error).split())[:300]}\n"
        if is_remote(path):
            append_text(path, then if path.exists() else f"{where} failed:\n{text}")
            return ""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(f"{where} failed:\n{text}")
        except FileExistsError:
            append_text(path, then)
        return ""
    except OSError as e:
        return f" ({path} could not be written: {e.strerror or e})"


def _raise_failures(phase: _Phase, workdir: AnyPath, name: str) -> None:
    if phase.failures:
        lines = "; ".join(f"{cid}: {msg}" for cid, msg in phase.failures.items())
        raise RunError(f"{len(phase.failures)} {name} cell(s) failed (tracebacks in "
                       f"{workdir / 'cells'}/<cell_id>/error.txt): {lines}")


def _records(workdir: AnyPath, cells: Iterable[Cell]) -> list[Record]:
    return [read_record(record_path(workdir, c.cell_id)) for c in cells if has_record(workdir, c.cell_id)]
