"""Per-cell experiment logs: train loss, lr, grad norm, examples/s per step and the eval metrics at the end.

One small interface (`ExperimentLog`: `scalars(step, values)`, `resume_at(step)`, `flush()` and `close()`)
with three writers, chosen by name in the grid file (`logging: [csv, tensorboard]`) or on the command line
(`run --log tensorboard`):

    csv          cells/<id>/scalars.csv, long format (step, name, value), appended across resumes
    tensorboard  cells/<id>/tensorboard/events.out.tfevents.*, written by tensorboardX (no TensorFlow);
                 `tensorboard --logdir WORKDIR/cells` shows every cell as a run
    wandb        a Weights & Biases run per cell (the [wandb] extra); its id is the cell id, so a resumed
                 cell continues its run. WANDB_PROJECT, WANDB_MODE=offline etc. are wandb's own settings.

A resumed cell trains again the steps after its checkpoint, so the trainer calls `resume_at(step)` first:
scalars.csv drops its rows after `step`, and TensorBoard gets a new event file that starts with a purge
marker at step + 1 (tensorboardX's `purge_step`), so TensorBoard hides the old file's later steps and shows
each step once. wandb keeps what it has (it drops steps below the last one it logged). The trainer
flushes the logs whenever it saves a checkpoint.

A cell folder in a bucket (a gs:// workdir): scalars.csv is kept in a local copy that is uploaded whole
(an object cannot be appended to) at most every PUSH_S while training, at every flush and at close;
tensorboardX writes its event files into a local folder whose files are uploaded at every flush and at
close (its own gs:// writer needs google-cloud-storage and bypasses etils.epath). wandb keeps its local
files where wandb puts them.

train_log.csv (harness/cell/train.py) is written whatever is chosen. Names are "train/loss", "train/lr",
"train/grad_norm", "train/examples_per_s" and "eval/<metric>"; the eval metrics are logged at the last
training step.
"""

from __future__ import annotations

import csv
import importlib.util
import numbers
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from results.paths import AnyPath, LocalCopy, as_path, copy_file, is_remote, make_dirs

DEFAULT = ("csv", "tensorboard")
WRITERS = ("csv", "tensorboard", "wandb")
_PACKAGES = {"tensorboard": ("tensorboardX", "tensorboardX"), "wandb": ("wandb", "the [wandb] extra")}
PUSH_S = 30.0  # a bucket's scalars.csv is uploaded at most this often between flushes


class ExperimentLog(Protocol):
    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...

    def resume_at(self, step: int) -> None:
        """Training continues after `step`: forget what was logged past it."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """The writer names, validated: known, no duplicates, their package importable. ValueError otherwise."""
    for name in names:
        if name not in WRITERS:
            raise ValueError(f"unknown experiment log {name!r}; expected some of {', '.join(WRITERS)}")
        module, what = _PACKAGES.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise ValueError(f"experiment log {name!r} needs the {module} package "
                             f"(pip install {module!r}, or {what})")
    if len(set(names)) != len(names):
        raise ValueError(f"experiment logs {list(names)} name one writer twice")
    return tuple(names)


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class CsvLog:
    """Long-format CSV (step, name, value): new names (an eval metric) need no new column."""

    HEADER = ("step", "name", "value")

    def __init__(self, path: AnyPath):
        self._copy = LocalCopy(path, push_every_s=PUSH_S)  # the file itself when it is local
        self._path = self._copy.local
        self._open()

    def _open(self) -> None:
        fresh = not self._path.exists()
        self._file = open(self._path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(self.HEADER)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in _numeric(values).items():
            self._writer.writerow([step, name, repr(value)])
        self._file.flush()
        self._copy.push_if_due()

    def resume_at(self, step: int) -> None:
        """Keep the rows of steps <= `step` (rows that do not parse as a step go too)."""
        self._file.close()
        with open(self._path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
        kept = [r for r in rows if r and r[0].lstrip("-").isdigit() and int(r[0]) <= step]
        with open(self._path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([self.HEADER, *kept])
        self._open()
        self._copy.push()

    def flush(self) -> None:
        self._file.flush()
        self._copy.push()

    def close(self) -> None:
        self._file.close()
        self._copy.close()


class TensorBoardLog:
    """TensorBoard event files through tensorboardX (protobuf only, no TensorFlow). A bucket folder gets
    them written locally and uploaded at flush and close."""

    def __init__(self, directory: AnyPath):
        self._target = directory
        self._earlier = directory.is_dir() and any(directory.glob("events.out.tfevents.*"))
        self._directory = Path(tempfile.mkdtemp(prefix="paligemma-tensorboard-")) if is_remote(directory) \
            else Path(directory)
        self._purge_step: int | None = None
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """The SummaryWriter, opened on first use. Its file name ends in the time in ns, so a later
        writer's file sorts after an earlier one's even within one second (TensorBoard reads them in
        name order, and a purge marker only hides what it has read before)."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(self._directory), flush_secs=30, purge_step=self._purge_step,
                                         filename_suffix=f".{time.time_ns():020d}")
        return self._writer

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in _numeric(values).items():
            self.writer.add_scalar(name, value, global_step=step)

    def resume_at(self, step: int) -> None:
        """A new event file whose purge marker hides the earlier files' steps > `step`."""
        if self._writer is not None:
            self._writer.close()
            self._writer, self._earlier = None, True
            self._upload()
        self._purge_step = step + 1 if self._earlier else None

    def _upload(self) -> None:
        """A bucket folder: copy every local event file up (whole: they are small and only grow)."""
        if is_remote(self._target):
            for name in sorted(os.listdir(self._directory)):
                copy_file(self._directory / name, self._target / name)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._upload()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._upload()
        if is_remote(self._target):
            shutil.rmtree(self._directory, ignore_errors=True)


class WandbLog:
    """A Weights & Biases run named and identified by the cell id, its config the cell's config."""

    def __init__(self, directory: Path, run_name: str, config: Mapping[str, Any]):
        """`directory` is where wandb keeps its local files (a local folder: wandb writes there itself)."""
        import wandb

        self._run = wandb.init(project=None, name=run_name, id=run_name, resume="allow", dir=str(directory),
                               config=dict(config), reinit="create_new")

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log(_numeric(values), step=step)

    def resume_at(self, step: int) -> None:
        """Nothing to cut: wandb drops steps below the last one it logged."""

    def flush(self) -> None:
        """wandb sends in the background."""

    def close(self) -> None:
        self._run.finish()


class FanOut:
    """Every writer gets every call."""

    def __init__(self, logs: Sequence[ExperimentLog]):
        self.logs = list(logs)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for log in self.logs:
            log.scalars(step, values)

    def resume_at(self, step: int) -> None:
        for log in self.logs:
            log.resume_at(step)

    def flush(self) -> None:
        for log in self.logs:
            log.flush()

    def close(self) -> None:
        for log in self.logs:
            log.close()


def open_log(names: Sequence[str], directory: str | os.PathLike, *, run_name: str,
             config: Mapping[str, Any] | None = None) -> FanOut:
    """The chosen writers for one cell, writing under `directory` (the cell's directory, local or in a
    bucket)."""
    directory = as_path(directory)
    make_dirs(directory)
    logs: list[ExperimentLog] = []
    for name in check_names(names):
        if name == "csv":
            logs.append(CsvLog(directory / "scalars.csv"))
        elif name == "tensorboard":
            logs.append(TensorBoardLog(directory / "tensorboard"))
        else:  # wandb's files stay local: the current folder's ./wandb for a cell in a bucket
            logs.append(WandbLog(Path.cwd() if is_remote(directory) else directory, run_name, config or {}))
    return FanOut(logs)
