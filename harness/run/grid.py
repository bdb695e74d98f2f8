"""Grid YAML -> cells, and the paper's transfer protocol (docs/paligemma2-facts.md §3.2 "Protocol (§4.1)").

Protocol: sweep the lr at one resolution (default: the lowest) on minival with one seed; per
(task, size) keep the lr with the best headline metric (higher is better; a tie goes to the smaller
lr, the cheaper and more stable choice); reuse it at every final resolution and retrain with N seeds
on the eval split. A task with a single lr has no sweep. The schema is documented at the top of
configs/grids/paper.yaml. Validation happens entirely in `load_grid`, before anything is written,
and every error is one line naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness.cell.experiment_log import DEFAULT as DEFAULT_LOGGING
from harness.cell.experiment_log import check_names
from harness.cell.recipe import (
    AUTO_MESH,
    HARNESS_KEYS,
    RUN_ONLY_KEYS,
    MeshRequest,
    effective,
    recipe_fields,
    tokenizer_path,
)
from harness.shipped import resolve_relative
from model import hub
from model.config import config_for, family_of
from results.lr_choice import format_lr
from results.paths import as_path
from tasks.registry import available

DEFAULT_RUNNER = "harness.cell.run_cell:run_cell"
RANDOM_INIT = "random"
FIELDS = ("name", "demo", "train", "tasks", "sizes", "resolutions", "lrs", "protocol", "data_root",
          "checkpoints", "overrides", "runner", "keep_checkpoints", "logging", "mesh")
REQUIRED = ("name", "tasks", "sizes", "resolutions", "checkpoints")
# Recipe fields that say how a cell's lr is chosen, not what a cell computes: left out of its identity
# (the lr the choice lands on is in the id).
LR_POLICY_FIELDS = ("lr_grid", "sweep_resolution", "sweep_per_point")
SWEEP_FIELDS = ("resolution", "split", "seed")
FINAL_FIELDS = ("seeds", "split", "resolutions")
DEMO_FIELDS = ("num_train", "num_eval", "seed")
ALL_TASKS = "all"  # the overrides key that applies to every task
# What a finished cell keeps on disk (applied when its record is written): nothing but its record and
# predictions, its fine-tuned params (cells/<id>/params.npz), or also its last training checkpoint.
KEEP_CHECKPOINTS = ("none", "params", "all")
DEFAULT_KEEP = "none"
MESH_KEYS = ("model_parallel", "data", "model")


class GridError(ValueError):
    """A grid file that cannot be used; the message is one line naming file, line and field."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class DemoData:
    """Generate data_root/<task> with the plugin's write_demo when it is missing."""

    num_train: int
    num_eval: int
    seed: int


@dataclass(frozen=True)
class Cell:
    """One fine-tune + evaluation. Everything that changes its result is a field, and is hashed."""

    task: str
    size: str
    resolution: int
    lr: float
    seed: int
    phase: str  # "sweep" | "final"
    split: str  # the split role evaluated
    checkpoint: str  # a file path, an HF directory, hf://org/name[@revision], or "random"
    data_dir: str  # the task's manual dir, data_root/<task>
    overrides: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) pairs
    # Labels outputs "demo scale"; it does not change what the cell computes, so it is not hashed.
    demo: bool = False
    # Where the runner keeps prepared data (tasks/prepared.py; "" = the default cache). Set by the
    # scheduler; the prepared data is keyed on the raw files, so it does not change the result: not hashed.
    data_cache: str = ""
    # Grid.keep_checkpoints, set by the scheduler: whether the runner saves the fine-tuned params.
    # Not hashed: it changes what stays on disk, not the result.
    keep_checkpoints: str = DEFAULT_KEEP
    # What else changes the result (see `identity`): sorted (key, JSON text) pairs, hashed.
    identity: tuple[tuple[str, str], ...] = ()
    # The experiment-log writers (harness/cell/experiment_log.py); not hashed either.
    logging: tuple[str, ...] = DEFAULT_LOGGING
    # Where it runs (harness/cell/mesh.py): the result does not depend on it (up to float reassociation),
    # so it is neither hashed nor compared; each record says which mesh its cell ran on.
    mesh: MeshRequest = field(default=None, compare=False)
    # False: an eval-only cell, the base checkpoint scored as it is (grid `train: false`); hashed.
    train: bool = True

    def config(self) -> dict[str, Any]:
        """The effective config as JSON-able data: what the hash and the record's `config` hold."""
        return {"task": self.task, "size": self.size, "resolution": self.resolution, "lr": self.lr,
                "seed": self.seed, "phase": self.phase, "split": self.split,
                "checkpoint": self.checkpoint, "data_dir": self.data_dir,
                "overrides": {k: v for k, v in self.overrides if k not in RUN_ONLY_KEYS},
                **({} if self.train else {"train": False}),
                **{k: json.loads(v) for k, v in self.identity}}

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    @property
    def cell_id(self) -> str:
        """Readable prefix + stable hash, e.g. vqav2-nano-s-32-lr3e-04-s0-1a2b3c4d."""
        lr = f"lr{format_lr(self.lr)}" if self.train else "eval"
        return f"{self.task}-{self.size}-{self.resolution}-{lr}-s{self.seed}-{self.config_hash}"


@dataclass(frozen=True)
class Protocol:
    sweep_resolution: int
    sweep_split: str
    sweep_seed: int
    final_seeds: tuple[int, ...]
    final_split: str
    final_resolutions: tuple[int, ...]


@dataclass(frozen=True)
class Grid:
    name: str
    demo: bool
    demo_data: DemoData | None
    tasks: tuple[str, ...]
    sizes: tuple[str, ...]
    resolutions: tuple[int, ...]
    lrs: Mapping[tuple[str, str], tuple[float, ...]]  # per (task, size)
    protocol: Protocol
    data_root: str
    checkpoints: str  # pattern with {size} and {resolution} (a path or hf://org/name), or "random"
    overrides: Mapping[str, tuple[tuple[str, Any], ...]]  # per task, "all" already merged in
    runner: str
    source: Path
    text: str  # the file as read, copied into the workdir by the scheduler
    keep_checkpoints: str = DEFAULT_KEEP
    logging: tuple[str, ...] = DEFAULT_LOGGING  # experiment-log writers of every cell
    mesh: Mapping[str, MeshRequest] = field(default_factory=dict)  # per task; missing: None
    train: bool = True  # False: every cell scores its base checkpoint without fine-tuning

    def swept(self, task: str, size: str) -> bool:
        return len(self.lrs[task, size]) > 1

    def sweep_resolution(self, task: str, size: str, resolution: int) -> int:
        """The resolution whose sweep picks the lr of the final cells of (task, size) at `resolution`.

        The plugin's recipe decides where the paper did (tasks/base.py Recipe.sweep_resolution and
        sweep_per_point; docs/fidelity.yaml): re-swept at every point, or swept at one resolution of its
        own when the grid has it; otherwise the grid's `protocol.sweep.resolution`. A grid override of
        `sweep_resolution` / `sweep_per_point` changes the plugin's choice for that task."""
        recipe = effective(_task(task), size, resolution, self.lrs[task, size][0],
                           {k: v for k, v in self.overrides[task] if k in LR_POLICY_FIELDS}).recipe
        if recipe.sweep_per_point:
            return resolution
        if recipe.sweep_resolution is not None and recipe.sweep_resolution in self.resolutions:
            return int(recipe.sweep_resolution)
        return self.protocol.sweep_resolution

    def sweep_points(self) -> list[tuple[str, str, int]]:
        """(task, size, sweep resolution) of every sweep, in run order."""
        points = []
        for t in self.tasks:
            for s in self.sizes:
                if self.swept(t, s):
                    res = {self.sweep_resolution(t, s, r) for r in self.protocol.final_resolutions}
                    points += [(t, s, r) for r in sorted(res)]
        return points

    def random_init_twin(self) -> Grid:
        """The same grid from random init (name + "-random"): the baseline that shows what the base
        checkpoints bring. Its cells hash differently, so they never mix with the original's."""
        name = f"{self.name}-random"
        note = f"\n# Run with --random-init: checkpoints replaced by {RANDOM_INIT}, name by {name}.\n"
        return replace(self, name=name, checkpoints=RANDOM_INIT, text=self.text + note)

    def checkpoint(self, size: str, resolution: int) -> str:
        if self.checkpoints == RANDOM_INIT:
            return RANDOM_INIT
        return resolve_relative(self.checkpoints.format(size=size, resolution=resolution))

    def data_dir(self, task: str) -> str:
        return os.path.join(self.data_root, task)

    def _cell(self, task: str, size: str, resolution: int, lr: float, seed: int, phase: str,
              split: str) -> Cell:
        checkpoint = self.checkpoint(size, resolution)
        return Cell(task=task, size=size, resolution=resolution, lr=lr, seed=seed, phase=phase,
                    split=split, checkpoint=checkpoint, data_dir=self.data_dir(task),
                    overrides=self.overrides[task], demo=self.demo,
                    identity=identity(task, size, resolution, lr, checkpoint, self.overrides[task],
                                      self.demo_data),
                    logging=self.logging, mesh=self.mesh.get(task), train=self.train)

    def sweep_cells(self) -> list[Cell]:
        p = self.protocol
        return [self._cell(t, s, r, lr, p.sweep_seed, "sweep", p.sweep_split)
                for t, s, r in self.sweep_points() for lr in self.lrs[t, s]]

    def fixed_lrs(self) -> dict[tuple[str, str], float]:
        """The lr of every (task, size) that has no sweep."""
        return {(t, s): self.lrs[t, s][0] for t in self.tasks for s in self.sizes if not self.swept(t, s)}

    def final_plan(self) -> list[tuple[str, str, int, int]]:
        """(task, size, resolution, seed) of every final cell, in run order."""
        p = self.protocol
        return [(t, s, r, seed) for t in self.tasks for s in self.sizes
                for r in p.final_resolutions for seed in p.final_seeds]

    def final_lr(self, best_lrs: Mapping[tuple, float], task: str, size: str, resolution: int) -> float | None:
        """The lr of a final cell: its sweep point's pick ((task, size, sweep resolution) keys), or the
        (task, size) lr when it has no sweep; None while its sweep is incomplete."""
        key = (task, size, self.sweep_resolution(task, size, resolution)) if self.swept(task, size) else None
        return best_lrs[key] if key in best_lrs else best_lrs.get((task, size))

    def final_cells(self, best_lrs: Mapping[tuple, float]) -> list[Cell]:
        """Final cells whose lr is known (fixed, or picked by their complete sweep)."""
        p = self.protocol
        cells = []
        for t, s, r, seed in self.final_plan():
            lr = self.final_lr(best_lrs, t, s, r)
            if lr is not None:
                cells.append(self._cell(t, s, r, lr, seed, "final", p.final_split))
        return cells


def project_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("paligemma-transfer")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _task(name: str) -> Any:
    from tasks.registry import get_task

    return get_task(name)


def demo_identity(task: str, demo_data: DemoData | None) -> dict[str, int] | None:
    """What makes generated demo data what it is: its sizes, seed and the generator's (plugin's) version."""
    if demo_data is None:
        return None
    return {"num_train": demo_data.num_train, "num_eval": demo_data.num_eval, "seed": demo_data.seed,
            "generator_version": _task(task).version}


def identity(task: str, size: str, resolution: int, lr: float, checkpoint: str,
             overrides: tuple[tuple[str, Any], ...], demo_data: DemoData | None) -> tuple[tuple[str, str], ...]:
    """Everything besides the grid's own fields that changes a cell's result, as hashed (key, JSON) pairs:
    the plugin's version, the effective recipe (harness/cell/recipe.py, as the run computes it), the content
    fingerprints of the base checkpoint and the tokenizer, the project's version and the demo data's
    identity. `load_grid` has already checked that the overrides make a valid recipe."""
    from harness.cell.fingerprint import MISSING, fingerprint

    plugin = _task(task)
    known = recipe_fields() | HARNESS_KEYS  # a custom runner's own keys are hashed as overrides only
    recipe = effective(plugin, size, resolution, lr, {k: v for k, v in overrides if k in known}).recipe
    tokenizer = tokenizer_path(size, dict(overrides))
    computed = {k: v for k, v in dataclasses.asdict(recipe).items() if k not in LR_POLICY_FIELDS}
    values = {"task_version": plugin.version, "recipe": computed,
              "checkpoint_sha256": fingerprint(checkpoint),
              "tokenizer_sha256": fingerprint(tokenizer) if tokenizer is not None else MISSING,
              "project_version": project_version(), "demo_data": demo_identity(task, demo_data)}
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in values.items()))


# --- loading and validation -----------------------------------------------------------------------

class _Where:
    """Maps a field path to its line in the YAML file, for error messages."""

    def __init__(self, path: Path, root: yaml.Node):
        self.path, self.root = path, root

    def line(self, field: Sequence[str | int]) -> int | None:
        node, line = self.root, None
        for key in field:
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == key]
                if not match:
                    break
                line = match[0][0].start_mark.line + 1
                node = match[0][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def error(self, field: Sequence[str | int], message: str) -> GridError:
        name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in field).lstrip(".")
        line = self.line(field)
        place = f"{self.path}:{line}" if line else str(self.path)
        return GridError(f"{place}: {name}: {message}" if name else f"{place}: {message}")


def _parse(path: Path, text: str) -> tuple[Any, _Where]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        place = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise GridError(f"{place}: malformed YAML: {problem}") from None
    where = _Where(path, root)
    _reject_duplicate_keys(root, where, ())
    return data, where


def _reject_duplicate_keys(node: yaml.Node | None, where: _Where, field: tuple) -> None:
    """PyYAML keeps the last of two equal keys silently; a grid file must not say a thing twice."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            if k.value in seen:
                raise GridError(f"{where.path}:{k.start_mark.line + 1}: {'.'.join(field + (k.value,))}: "
                                "duplicate key")
            seen.add(k.value)
            _reject_duplicate_keys(v, where, field + (k.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _reject_duplicate_keys(v, where, field + (str(i),))


def _check_keys(data: Mapping, allowed: Sequence[str], where: _Where, field: tuple) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise where.error(field + (key,), f"unknown field{hint}; expected one of {', '.join(allowed)}")


def _mapping(value: Any, where: _Where, field: tuple) -> Mapping:
    if not isinstance(value, Mapping):
        raise where.error(field, f"expected a mapping, got {type(value).__name__}")
    return value


def _str(value: Any, where: _Where, field: tuple) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(field, f"expected a non-empty string, got {value!r}")
    return value


def _choice(value: Any, choices: Sequence[str], where: _Where, field: tuple) -> str:
    if value not in choices:
        raise where.error(field, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(value: Any, where: _Where, field: tuple) -> bool:
    if not isinstance(value, bool):
        raise where.error(field, f"expected true or false, got {value!r}")
    return value


def _int(value: Any, where: _Where, field: tuple, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(field, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _list(value: Any, where: _Where, field: tuple) -> list:
    if not isinstance(value, list) or not value:
        raise where.error(field, f"expected a non-empty list, got {value!r}")
    if len(set(map(repr, value))) != len(value):
        raise where.error(field, f"has duplicates: {value!r}")
    return value


def _lr(value: Any, where: _Where, field: tuple) -> float:
    # YAML 1.1 reads 3e-7 (no dot) as a string, so numeric strings are accepted as numbers.
    try:
        lr = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        lr = math.nan
    if not (lr > 0 and math.isfinite(lr)):
        raise where.error(field, f"expected a positive learning rate, got {value!r}")
    return lr


def _lr_list(value: Any, where: _Where, field: tuple) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise where.error(field, f"expected a list of learning rates such as [1.0e-5, 3.0e-5], got {value!r}")
    if not value:
        raise where.error(field, "empty lr list; expected a non-empty list of learning rates")
    lrs = tuple(_lr(v, where, field + (i,)) for i, v in enumerate(value))
    if len(set(lrs)) != len(lrs):
        raise where.error(field, f"has duplicate learning rates: {value!r}")
    return tuple(sorted(lrs))


def plugin_lrs(task: str, size: str, resolution: int) -> tuple[float, ...]:
    """The plugin's own lr list (Recipe.lr_grid: the paper's sweep for that task, docs/fidelity.yaml)."""
    return tuple(float(lr) for lr in _task(task).recipe(size, resolution).lr_grid)


def _lrs(value: Any, tasks: Sequence[str], sizes: Sequence[str], resolution: int,
         where: _Where) -> dict[tuple[str, str], tuple[float, ...]]:
    """`lrs` is a list for every task, or a mapping {default: [...], <task>: [...], <size>: {...}}; a size's
    block {default: [...], <task>: [...]} replaces the lists for that size (the protocol picks an lr per
    (task, size), so a grid that fixes them may need a different one per size). A task the grid gives no
    list (no `lrs`, or neither its own entry nor `default`) sweeps its plugin's `lr_grid`."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        lrs = _lr_list(value, where, ("lrs",))
        return {(t, s): lrs for t in tasks for s in sizes}
    _check_keys(value, ("default", *tasks, *sizes), where, ("lrs",))
    per = {k: _lr_list(v, where, ("lrs", k)) for k, v in value.items() if k not in sizes}
    lrs = {(t, s): per.get(t, per.get("default")) or plugin_lrs(t, s, resolution) for t in tasks for s in sizes}
    for size in sizes:
        if size not in value:
            continue
        block = _mapping(value[size], where, ("lrs", size))
        _check_keys(block, ("default", *tasks), where, ("lrs", size))
        own = {k: _lr_list(v, where, ("lrs", size, k)) for k, v in block.items()}
        for t in tasks:
            lrs[t, size] = own.get(t, own.get("default", lrs[t, size]))
    return lrs


def _override_value(value: Any, where: _Where, field: tuple) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return tuple(value)
    raise where.error(field, f"expected a scalar or a list of scalars, got {value!r}")


def _overrides(value: Any, tasks: Sequence[str], where: _Where) -> dict[str, tuple[tuple[str, Any], ...]]:
    """`overrides` is {all: {key: value}, <task>: {key: value}}; a task's own keys win over `all`."""
    value = _mapping(value, where, ("overrides",))
    _check_keys(value, (ALL_TASKS, *tasks), where, ("overrides",))
    parsed = {}
    for scope, entries in value.items():
        entries = _mapping(entries if entries is not None else {}, where, ("overrides", scope))
        for key in entries:
            if key == "lr":
                raise where.error(("overrides", scope, key), "the lr comes from `lrs` and the sweep, "
                                  "not from overrides")
        parsed[scope] = {str(k): _override_value(v, where, ("overrides", scope, k)) for k, v in entries.items()}
    return {t: tuple(sorted({**parsed.get(ALL_TASKS, {}), **parsed.get(t, {})}.items())) for t in tasks}


def _check_override_keys(value: Mapping, where: _Where) -> None:
    """Every override key must be a Recipe field or an option the default runner reads, so a typo
    (`checkpoint_evry`) fails when the grid is loaded (and in --dry-run), not when a cell starts."""
    from harness.cell.recipe import HARNESS_KEYS, recipe_fields

    allowed = sorted(recipe_fields() | HARNESS_KEYS)
    for scope, entries in value.items():
        for key in entries or {}:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise where.error(("overrides", scope, key), f"unknown override{hint}; expected a recipe "
                                  f"field or harness option: {', '.join(allowed)}")


# Recipe fields a grid may override, with the type and least value each must have.
_RECIPE_RANGES: dict[str, tuple[type, float]] = {
    "batch_size": (int, 1), "steps": (int, 1), "epochs": (float, 0), "text_len": (int, 2),
    "max_decode_len": (int, 1), "beam_size": (int, 1), "weight_decay": (float, 0),
    "label_smoothing": (float, 0), "dropout": (float, 0)}


def _override_field(key: str, task: str, raw: Mapping) -> tuple:
    """Where an override's value was written: the task's own entry, else `all`."""
    own = raw.get(task) or {}
    return ("overrides", task, key) if key in own else ("overrides", ALL_TASKS, key)


def _check_recipes(tasks: Sequence[str], sizes: Sequence[str], resolutions: Sequence[int],
                   lrs: Mapping[tuple[str, str], tuple[float, ...]],
                   overrides: Mapping[str, tuple[tuple[str, Any], ...]], raw: Mapping, where: _Where) -> None:
    """Every cell's effective recipe (harness/cell/recipe.py) is built now, so a bad value (`steps: -6`,
    `batch_size: 0`, `text_len: long`) fails at load, naming its line, not at cell start or in the table."""
    for task in tasks:
        values = dict(overrides[task])
        for key, (kind, least) in _RECIPE_RANGES.items():
            value = values.get(key)
            if value is None:
                continue
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if ok and kind is int:
                ok = float(value).is_integer()
            if not ok or value < least or (key == "epochs" and value <= 0):
                what = "an integer" if kind is int else "a number"
                bound = f">= {least}" if key != "epochs" else "> 0"
                raise where.error(_override_field(key, task, raw), f"{value!r} is not {what} {bound}")
        known = {k: v for k, v in values.items() if k in recipe_fields() | HARNESS_KEYS}
        for size in sizes:
            for res in resolutions:
                try:
                    effective(_task(task), size, res, lrs[task, size][0], known)
                except (TypeError, ValueError) as e:
                    raise where.error(("overrides", task if raw.get(task) else ALL_TASKS),
                                      f"the recipe of {task} at {size}/{res} px is refused: {e}") from None


def _mesh_request(value: Any, where: _Where, field: tuple) -> MeshRequest:
    """`auto`, or {model_parallel: M} (data = devices / M), or {data: D, model: M} (either may be left
    out and is then devices / the other)."""
    if value is None or value == AUTO_MESH:
        return value
    value = _mapping(value, where, field)
    _check_keys(value, MESH_KEYS, where, field)
    if "model_parallel" in value and len(value) > 1:
        raise where.error(field, "give either model_parallel or data/model, not both")
    if not value:
        raise where.error(field, f"empty mesh; expected {AUTO_MESH!r} or some of {', '.join(MESH_KEYS)}")
    return {str(k): _int(v, where, field + (k,), 1) for k, v in value.items()}


def _mesh(value: Any, tasks: Sequence[str], where: _Where) -> dict[str, MeshRequest]:
    """`mesh` is one request for every task (`auto`, {model_parallel: 4}, {data: 2, model: 4}), or
    {all: request, <task>: request} where a task's own request wins over `all`."""
    if value is None:
        return {}
    if isinstance(value, Mapping) and set(value) & {ALL_TASKS, *tasks}:
        _check_keys(value, (ALL_TASKS, *tasks), where, ("mesh",))
        per = {scope: _mesh_request(v, where, ("mesh", scope)) for scope, v in value.items()}
        return {t: per.get(t, per.get(ALL_TASKS)) for t in tasks}
    request = _mesh_request(value, where, ("mesh",))
    return {t: request for t in tasks}


def _check_mesh_batches(mesh: Mapping[str, MeshRequest], overrides: Mapping[str, tuple], sizes: Sequence[str],
                        resolutions: Iterable[int], where: _Where, raw: Any) -> None:
    """A mesh with an explicit data axis must split every batch of its task evenly (checked here, before
    anything runs; a data axis derived from the device count is checked when the cell starts)."""
    from tasks.registry import get_task

    for task, request in mesh.items():
        data = request.get("data") if isinstance(request, Mapping) else None
        if data is None:
            continue
        field = ("mesh", task, "data") if isinstance(raw, Mapping) and task in raw else (
            ("mesh", ALL_TASKS, "data") if isinstance(raw, Mapping) and ALL_TASKS in raw else ("mesh", "data"))
        batch = dict(overrides[task]).get("batch_size")
        batches = {batch} if batch is not None else {
            get_task(task).recipe(size, res).batch_size for size in sizes for res in resolutions}
        for b in sorted(batches):
            if isinstance(b, int) and b % data:
                raise where.error(field, f"data axis {data} does not split {task}'s batch size {b}; "
                                  f"use a data axis that divides it (or set overrides.{task}.batch_size)")


def _protocol(value: Any, resolutions: tuple[int, ...], sizes: Sequence[str], where: _Where) -> Protocol:
    value = _mapping(value if value is not None else {}, where, ("protocol",))
    _check_keys(value, ("sweep", "final"), where, ("protocol",))
    sweep = _mapping(value.get("sweep") or {}, where, ("protocol", "sweep"))
    final = _mapping(value.get("final") or {}, where, ("protocol", "final"))
    _check_keys(sweep, SWEEP_FIELDS, where, ("protocol", "sweep"))
    _check_keys(final, FINAL_FIELDS, where, ("protocol", "final"))

    sweep_res = _int(sweep.get("resolution", min(resolutions)), where, ("protocol", "sweep", "resolution"), 1)
    if sweep_res not in resolutions:
        raise where.error(("protocol", "sweep", "resolution"),
                          f"{sweep_res} is not one of the grid's resolutions {list(resolutions)}")
    for size in sizes:
        try:
            config_for(size, sweep_res)
        except KeyError as e:
            raise where.error(("protocol", "sweep", "resolution"), e.args[0]) from None

    seeds = final.get("seeds", 1)
    field = ("protocol", "final", "seeds")
    if isinstance(seeds, list):
        seeds = tuple(_int(s, where, field + (i,)) for i, s in enumerate(_list(seeds, where, field)))
    else:
        seeds = tuple(range(_int(seeds, where, field, 1)))

    field = ("protocol", "final", "resolutions")
    final_res = tuple(_list(final["resolutions"], where, field)) if "resolutions" in final else resolutions
    for i, r in enumerate(final_res):
        if r not in resolutions:
            raise where.error(field + (i,), f"{r!r} is not one of the grid's resolutions {list(resolutions)}")
    return Protocol(
        sweep_resolution=sweep_res,
        sweep_split=_str(sweep.get("split", "minival"), where, ("protocol", "sweep", "split")),
        sweep_seed=_int(sweep.get("seed", 0), where, ("protocol", "sweep", "seed")),
        final_seeds=seeds,
        final_split=_str(final.get("split", "eval"), where, ("protocol", "final", "split")),
        final_resolutions=final_res)


def _check_splits(tasks: Sequence[str], protocol: Protocol, where: _Where) -> None:
    """The sweep and final split roles must be roles every task has (its plugin's `splits`)."""
    for key, role in (("sweep", protocol.sweep_split), ("final", protocol.final_split)):
        for task in tasks:
            roles = sorted(_task(task).splits)
            if role not in roles:
                close = difflib.get_close_matches(role, roles, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise where.error(("protocol", key, "split"),
                                  f"{task} has no split role {role!r}{hint}; its roles: {', '.join(roles)}")


def _demo(value: Any, where: _Where) -> tuple[bool, DemoData | None]:
    """`demo: true|false`, or a block {num_train, num_eval, seed}: demo scale plus generated data."""
    if isinstance(value, bool):
        return value, None
    value = _mapping(value, where, ("demo",))
    _check_keys(value, DEMO_FIELDS, where, ("demo",))
    missing = [k for k in DEMO_FIELDS if k not in value]
    if missing:
        raise where.error(("demo",), f"missing {', '.join(missing)}; a demo block needs {', '.join(DEMO_FIELDS)}")
    return True, DemoData(num_train=_int(value["num_train"], where, ("demo", "num_train"), 1),
                          num_eval=_int(value["num_eval"], where, ("demo", "num_eval"), 1),
                          seed=_int(value["seed"], where, ("demo", "seed")))


def _checkpoints(value: Any, sizes: Sequence[str], resolutions: Iterable[int], where: _Where,
                 check_files: bool) -> str:
    pattern = _str(value, where, ("checkpoints",))
    if pattern == RANDOM_INIT:
        return pattern
    for size in sizes:
        for res in resolutions:
            try:
                path = pattern.format(size=size, resolution=res)
            except (KeyError, IndexError, ValueError) as e:
                raise where.error(("checkpoints",), f"bad pattern {pattern!r} ({e!r}); it may use "
                                  "{size} and {resolution}, or be 'random'; hf://org/name is a Hub id") from None
            if hub.is_hub_id(path):
                try:
                    hub.parse(path)
                except ValueError as e:
                    raise where.error(("checkpoints",), f"{e} (size {size}, resolution {res})") from None
            path = resolve_relative(path)
            if hub.is_hub_id(path):
                continue
            if check_files and not Path(path).is_file() and not Path(path, "config.json").is_file():
                raise where.error(("checkpoints",), f"checkpoint file {path} does not exist (size {size}, "
                                  f"resolution {res}); relative paths are read from {os.getcwd()}")
    return pattern


def _logging(value: Any, where: _Where) -> tuple[str, ...]:
    """`logging: [csv, tensorboard, wandb]` (any of them; [] for none)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(("logging",), f"expected a list of experiment-log names, got {value!r}")
    try:
        return check_names(value)
    except ValueError as e:
        raise where.error(("logging",), str(e)) from None


def _runner(value: Any, where: _Where) -> str:
    runner = _str(value, where, ("runner",))
    module, _, function = runner.partition(":")
    if not module or not function.isidentifier():
        raise where.error(("runner",), f"expected 'module:function', got {runner!r}")
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise where.error(("runner",), f"module {module!r} cannot be imported")
    return runner


def load_grid(path: str | Path, *, check_files: bool = True) -> Grid:
    """Read and validate a grid file; raises GridError (one line: file:line: field: problem).

    Relative paths in the file (data_root, checkpoints) are relative to the current directory.
    `check_files=False` skips the checkpoint existence check, e.g. to plan the paper grid on a
    machine without its checkpoints.
    """
    path = as_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GridError(f"{path}: cannot read grid file ({e.__class__.__name__}: {e})") from None
    data, where = _parse(path, text)
    data = _mapping(data if data is not None else {}, where, ())
    _check_keys(data, FIELDS, where, ())
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise where.error((), f"missing required field(s) {', '.join(missing)}")

    name = _str(data["name"], where, ("name",))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise where.error(("name",), f"{name!r} must be letters, digits, '_', '.' or '-' (it names a folder)")
    demo, demo_data = _demo(data.get("demo", False), where)

    known = available()
    tasks = tuple(_list(data["tasks"], where, ("tasks",)))
    for i, task in enumerate(tasks):
        if task not in known:
            raise where.error(("tasks", i), f"unknown task {task!r}; known tasks: {', '.join(sorted(known))}")

    sizes = tuple(_list(data["sizes"], where, ("sizes",)))
    for i, size in enumerate(sizes):
        try:
            family_of(str(size))
        except KeyError as e:
            raise where.error(("sizes", i), e.args[0]) from None
    resolutions = tuple(_int(r, where, ("resolutions", i), 1)
                        for i, r in enumerate(_list(data["resolutions"], where, ("resolutions",))))
    for i, res in enumerate(resolutions):
        for size in sizes:
            try:
                config_for(size, res)
            except KeyError as e:
                raise where.error(("resolutions", i), e.args[0]) from None

    protocol = _protocol(data.get("protocol"), resolutions, sizes, where)
    _check_splits(tasks, protocol, where)
    train = _bool(data.get("train", True), where, ("train",))
    if not train and "lrs" in data:
        raise where.error(("lrs",), "an eval-only grid (train: false) fine-tunes nothing: remove `lrs`")
    lrs = (_lrs(data.get("lrs"), tasks, sizes, protocol.sweep_resolution, where) if train
           else {(t, s): (0.0,) for t in tasks for s in sizes})
    mesh = _mesh(data.get("mesh"), tasks, where)
    runner = _runner(data.get("runner", DEFAULT_RUNNER), where)
    raw_overrides = data.get("overrides") or {}
    overrides = _overrides(raw_overrides, tasks, where)
    if runner == DEFAULT_RUNNER:  # a custom runner may read keys of its own
        _check_override_keys(raw_overrides, where)
    _check_recipes(tasks, sizes, resolutions, lrs, overrides, raw_overrides, where)
    grid = Grid(
        name=name, demo=demo, demo_data=demo_data, tasks=tasks, sizes=sizes, resolutions=resolutions,
        lrs=lrs, protocol=protocol,
        data_root=_str(data.get("data_root", "data"), where, ("data_root",)),
        checkpoints=_str(data["checkpoints"], where, ("checkpoints",)),
        overrides=overrides, runner=runner, source=path, text=text,
        keep_checkpoints=_choice(data.get("keep_checkpoints", DEFAULT_KEEP), KEEP_CHECKPOINTS, where,
                                 ("keep_checkpoints",)),
        logging=_logging(data.get("logging", list(DEFAULT_LOGGING)), where),
        mesh=mesh, train=train)
    used_res = sorted(set(protocol.final_resolutions) | {r for _, _, r in grid.sweep_points()})
    _check_mesh_batches(mesh, overrides, sizes, used_res, where, data.get("mesh"))
    return replace(grid, checkpoints=_checkpoints(data["checkpoints"], sizes, used_res, where, check_files))
