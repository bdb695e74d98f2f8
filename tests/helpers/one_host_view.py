"""A runner for multi-host checkpoint tests, named in grids as `tests.helpers.one_host_view:run`: the real
cell runner (harness/cell/run_cell.py), with what one process reads of the cell's checkpoint changed, so
the files on disk stay good and only that host's view of them is bad (a stale NFS cache, a disk error on
one host).

CHECKPOINT_VIEW=<fault>:<process> picks the fault and the process that sees it, once per process:
  open        creating orbax's CheckpointManager over the folder raises OSError(EIO) first thing, as a
              listing of the folder that fails on that host does (before orbax would wait for the others)
  listing     the process lists no checkpoint step (a stale directory listing)
  digest      one file of the process's share hashes to a wrong sha256 (stale bytes)
  unreadable  reading one file of the process's share raises OSError(EIO) while it is hashed
  restore     the manifest check passes and the orbax restore raises OSError(EIO)
The process that sees the fault appends '<fault> <unix time>' to workdir/view_fault.log when it does, so a
test can time both processes' exit from that moment.
CHECKPOINT_INTERRUPT=<n> makes every process raise right after the first checkpoint of the n-th cell it
runs is written (both processes run the same cells in the same order, so all stop in the same cell): a
job interrupted mid-cell, leaving a good checkpoint for the next job to resume.
Process 0 logs each cell it starts to workdir/runner.log, so a test sees which cells ran in which job.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from harness.cell import checkpoints
from harness.cell.run_cell import run_cell

# Cells this process has started, for CHECKPOINT_INTERRUPT (the scheduler calls run() once per cell).
_started: list[str] = []


class Interrupted(RuntimeError):
    """Raised on every process after the first checkpoint of the interrupted cell is on disk."""


@contextlib.contextmanager
def _patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """`owner.name` replaced while the cell runs, put back after it (the next cell reads normally)."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _once(fault: Any, original: Any, fired: Callable[[], None]) -> Any:
    """A wrapper of `original` whose first call runs `fault` instead (after `fired()`): one file of one
    read is bad, as a stale cache or a failing sector is, and the checkpoint this cell writes afterwards
    is hashed right (its manifest must stay true for a later resume)."""
    calls = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            return original(*args, **kwargs)
        fired()
        return fault(*args, **kwargs)

    return wrapper


def _no_steps(self: checkpoints.Checkpoints) -> None:
    return None


def _stale_digest(path: Any) -> str:
    return hashlib.sha256(f"stale view of {path}".encode()).hexdigest()


def _read_error(path: Any) -> str:
    raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))


def _open_error(self: Any, directory: Any, *args: Any, **kwargs: Any) -> None:
    raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} opening {directory} on this host")


def _restore_error(self: checkpoints.Checkpoints, *args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} reading {self.directory} on this host")


def _view_fault(stack: contextlib.ExitStack, workdir: Path) -> None:
    """Install CHECKPOINT_VIEW's fault when it names this process."""
    fault, _, process = os.environ.get("CHECKPOINT_VIEW", "").partition(":")
    if not fault or process != str(jax.process_index()):
        return

    def fired() -> None:
        with open(workdir / "view_fault.log", "a", encoding="utf-8") as f:
            f.write(f"{fault} {time.time()}\n")

    owner, name, replacement = {
        "open": (ocp.CheckpointManager, "__init__", _open_error),
        "listing": (checkpoints.Checkpoints, "latest_step", _no_steps),
        "digest": (checkpoints, "_digest", _stale_digest),
        "unreadable": (checkpoints, "_digest", _read_error),
        "restore": (checkpoints.Checkpoints, "restore", _restore_error),
    }.get(fault, (None, "", None))
    if owner is None:
        raise ValueError(f"CHECKPOINT_VIEW={fault}:{process}: unknown fault {fault!r}")
    stack.enter_context(_patched(owner, name, _once(replacement, getattr(owner, name), fired)))


def _interrupt(stack: contextlib.ExitStack, cell_id: str) -> None:
    """Stop this cell after its first checkpoint when CHECKPOINT_INTERRUPT names its position."""
    wanted = os.environ.get("CHECKPOINT_INTERRUPT")
    if wanted is None or int(wanted) != len(_started):
        return
    save = checkpoints.Checkpoints.save

    def save_then_stop(self: checkpoints.Checkpoints, step: int, state: dict) -> None:
        save(self, step, state)
        raise Interrupted(f"{cell_id} interrupted after its checkpoint at step {step}")

    stack.enter_context(_patched(checkpoints.Checkpoints, "save", save_then_stop))


def run(cell: Any, cell_dir: Path) -> dict:
    _started.append(cell.cell_id)
    workdir = Path(cell_dir).parents[1]
    if jax.process_index() == 0:
        with open(workdir / "runner.log", "a", encoding="utf-8") as f:
            f.write(f"start {cell.cell_id}\n")
    with contextlib.ExitStack() as stack:
        _view_fault(stack, workdir)
        _interrupt(stack, cell.cell_id)
        return run_cell(cell, cell_dir, progress=False)


# The default runner's check (its memory plan) runs for this one too.
run.check = run_cell.check  # type: ignore[attr-defined]
