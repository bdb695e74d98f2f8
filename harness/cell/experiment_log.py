"""Per-cell experiment logs: train loss, lr, grad norm, examples/s per step and the eval metrics at the end.

One small interface (`ExperimentLog`: `scalars(step, values)` and `close()`) with three writers, chosen by
name in the grid file (`logging: [csv, tensorboard]`) or on the command line (`run --log tensorboard`):

    csv          cells/<id>/scalars.csv, long format (step, name, value), appended across resumes
    tensorboard  cells/<id>/tensorboard/events.out.tfevents.*, written by tensorboardX (no TensorFlow);
                 `tensorboard --logdir WORKDIR/cells` shows every cell as a run
    wandb        a Weights & Biases run per cell (the [wandb] extra); its id is the cell id, so a resumed
                 cell continues its run. WANDB_PROJECT, WANDB_MODE=offline etc. are wandb's own settings.

train_log.csv (harness/cell/train.py) is written whatever is chosen. Names are "train/loss", "train/lr",
"train/grad_norm", "train/examples_per_s" and "eval/<metric>"; the eval metrics are logged at the last
training step.
"""

from __future__ import annotations

import csv
import importlib.util
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

DEFAULT = ("csv", "tensorboard")
WRITERS = ("csv", "tensorboard", "wandb")
_PACKAGES = {"tensorboard": ("tensorboardX", "tensorboardX"), "wandb": ("wandb", "the [wandb] extra")}


class ExperimentLog(Protocol):
    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...

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

    def __init__(self, path: Path):
        fresh = not path.exists()
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(["step", "name", "value"])

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in _numeric(values).items():
            self._writer.writerow([step, name, repr(value)])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLog:
    """TensorBoard event files through tensorboardX (protobuf only, no TensorFlow)."""

    def __init__(self, directory: Path):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(directory), flush_secs=30)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in _numeric(values).items():
            self._writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self._writer.close()


class WandbLog:
    """A Weights & Biases run named and identified by the cell id, its config the cell's config."""

    def __init__(self, directory: Path, run_name: str, config: Mapping[str, Any]):
        import wandb

        self._run = wandb.init(project=None, name=run_name, id=run_name, resume="allow", dir=str(directory),
                               config=dict(config), reinit="create_new")

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log(_numeric(values), step=step)

    def close(self) -> None:
        self._run.finish()


class FanOut:
    """Every writer gets every call."""

    def __init__(self, logs: Sequence[ExperimentLog]):
        self.logs = list(logs)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for log in self.logs:
            log.scalars(step, values)

    def close(self) -> None:
        for log in self.logs:
            log.close()


def open_log(names: Sequence[str], directory: str | Path, *, run_name: str,
             config: Mapping[str, Any] | None = None) -> FanOut:
    """The chosen writers for one cell, writing under `directory` (the cell's directory)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    logs: list[ExperimentLog] = []
    for name in check_names(names):
        if name == "csv":
            logs.append(CsvLog(directory / "scalars.csv"))
        elif name == "tensorboard":
            logs.append(TensorBoardLog(directory / "tensorboard"))
        else:
            logs.append(WandbLog(directory, run_name, config or {}))
    return FanOut(logs)
