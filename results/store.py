"""One JSON record per finished cell, written atomically; the record is a cell's commit point.

The scheduler publishes a cell's predictions first and writes its record last (temp file + os.replace,
docs/design.md "results/"; on an object store one object write, atomic there), so a record on disk always
means a complete cell and a rerun skips it. A workdir is a local folder or a bucket URL (results/paths.py). Records
hold everything a table needs (config, metrics, versions), so `results/` never reads anything else.
This module imports nothing from the rest of the project but results/paths.py: any layer may read records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from etils import epath

from results.paths import AnyPath, as_path, is_remote, write_object

RECORDS_DIR = "records"
PREDICTIONS_DIR = "predictions"
VERSIONED_PACKAGES = ("jax", "flax", "optax", "paligemma-transfer")


class RecordError(ValueError):
    """A record file that cannot be read: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Record:
    """The outcome of one cell. Metric values are fractions as the metric returns them (CIDEr too)."""

    cell_id: str
    task: str
    size: str
    resolution: int
    lr: float
    seed: int
    phase: str  # "sweep" | "final"
    split: str  # the split role evaluated ("minival", "eval", ...)
    metrics: dict[str, float]
    headline: str  # the key of `metrics` that tables show
    steps: int
    wall_time_s: float
    config_hash: str  # the hash at the end of cell_id: sorted-JSON hash of `config`
    config: dict[str, Any]  # the cell's effective config (checkpoint, data_dir, overrides, ...)
    versions: dict[str, str | None]
    created: str  # UTC, ISO 8601
    demo: bool
    extra: dict[str, Any] = field(default_factory=dict)  # whatever else the runner returned
    # 1: records written before the field existed; SCHEMA_VERSION for new ones.
    schema_version: int = 1
    # Where and from what the number came: project_version, git_commit (None outside a checkout),
    # git_dirty, device_kind (None when the runner did not use JAX), num_devices.
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """The headline metric, or None when the runner did not report it."""
        value = self.metrics.get(self.headline)
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SCHEMA_VERSION = 2
REQUIRED = tuple(f.name for f in dataclasses.fields(Record)
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
OPTIONAL = tuple(f.name for f in dataclasses.fields(Record) if f.name not in REQUIRED)


def versions() -> dict[str, str | None]:
    """Python and the packages whose version changes results (None where one is not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """The project's one atomic writer (records, predictions, best_lr.json, grid.yaml, error.txt): a temp
    file in the same folder, fsynced, then os.replace and an fsync of the folder, so readers never see half
    a file and a crash right after the call cannot lose the rename. On an object store (gs://, s3://) an
    object is published whole by the single write that creates it, so it is written in one call."""
    if is_remote(path):
        write_object(as_path(path), text.encode("utf-8"))
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600; outputs share the usual 0644 (umask 022)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in `directory` (POSIX; a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def record_path(workdir: str | os.PathLike, cell_id: str) -> AnyPath:
    return as_path(workdir) / RECORDS_DIR / f"{cell_id}.json"


def predictions_path(workdir: str | os.PathLike, cell_id: str) -> AnyPath:
    return as_path(workdir) / PREDICTIONS_DIR / f"{cell_id}.jsonl"


def has_record(workdir: str | os.PathLike, cell_id: str) -> bool:
    return record_path(workdir, cell_id).is_file()


def jsonable(value: Any) -> Any:
    """json.dumps' `default` for records and prediction files: numpy/JAX scalars and arrays (common in a
    runner's extras and in parsed outputs), paths, sets (sorted) and dataclasses as plain JSON values.
    Anything else is an error naming its type, not a silent str(): what is written must read back."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, epath.Path)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable: {value!r}")


def write_record(workdir: str | os.PathLike, record: Record) -> AnyPath:
    path = record_path(workdir, record.cell_id)
    text = json.dumps(record.to_json(), indent=2, sort_keys=True, default=jsonable)
    atomic_write_text(path, text + "\n")
    return path


def read_record(path: str | os.PathLike) -> Record:
    """One record file -> Record, with an error naming the file for bad JSON or missing fields."""
    path = as_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}:{e.colno}: corrupt record (malformed JSON: {e.msg})") from None
    except UnicodeDecodeError:
        raise RecordError(f"{path}: corrupt record (not UTF-8 text)") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: corrupt record (expected a JSON object, got {type(data).__name__})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise RecordError(f"{path}: corrupt record (missing field(s) {', '.join(missing)})")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise RecordError(f"{path}: corrupt record (unknown field(s) {', '.join(unknown)})")
    if not isinstance(data["metrics"], dict):
        raise RecordError(f"{path}: corrupt record (metrics must be an object)")
    return Record(**data)


def load_records(workdir: str | os.PathLike) -> list[Record]:
    """Every record under workdir/records, sorted by cell id (an empty list when none are written)."""
    workdir = as_path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} does not exist")
    folder = workdir / RECORDS_DIR
    if not folder.is_dir():
        return []
    # Dot-files are temp files of writes in flight (atomic_write_text).
    paths = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    return [read_record(p) for p in paths]
