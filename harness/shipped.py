"""Files the project ships beside its code: the grid and pretraining configs (configs/) and the nano
checkpoints the demo fine-tunes (checkpoints/nano/).

A source checkout (editable install) reads them from the repository; `pip install .` copies them to
<prefix>/share/paligemma-transfer/ (pyproject.toml's data-files), so `paligemma-transfer run` finds the
demo grid and its checkpoints from any working directory.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from results.paths import AnyPath, as_path, is_remote

SOURCE_ROOT = Path(__file__).resolve().parents[1]
INSTALLED_ROOT = Path(sysconfig.get_path("data")) / "share" / "paligemma-transfer"
GRIDS = "configs/grids"


def shipped(relative: str | Path) -> Path | None:
    """The shipped copy of `relative` (e.g. "configs/grids/demo.yaml"): the source tree's, else the
    installed one; None when neither has it."""
    for root in (SOURCE_ROOT, INSTALLED_ROOT):
        path = root / relative
        if path.exists():
            return path
    return None


def grid_path(name: str) -> AnyPath:
    """A grid argument as a user gives it: a file path (relative to the current directory), a path the
    project ships ("configs/grids/paper.yaml" from anywhere), or a shipped grid's name ("demo-seeds")."""
    if is_remote(name):  # a grid file in a bucket (`eval --workdir gs://...` writes one there)
        return as_path(name)
    given = Path(name)
    if given.exists():
        return given
    for candidate in (given, Path(GRIDS) / given, Path(GRIDS) / f"{name}.yaml"):
        found = shipped(candidate)
        if found is not None and found.is_file():
            return found
    return given  # load_grid names it in its one-line error


def shipped_names() -> list[str]:
    """The shipped grids' names."""
    folder = shipped(GRIDS)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder is not None else []


def resolve_relative(path: str) -> str:
    """A relative path in a shipped grid (checkpoints/nano/...) that does not exist in the current
    directory but is shipped: the shipped copy's absolute path. Anything else unchanged."""
    if not path or Path(path).is_absolute() or "://" in path or Path(path).exists():
        return path
    found = shipped(path)
    return str(found) if found is not None else path
