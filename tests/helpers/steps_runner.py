"""A runner whose score is its cell's `steps` override / 100, named in test grids as
`tests.helpers.steps_runner:run`: two recipes of one cell give two different numbers, so a table shows
which configuration's record it used."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(cell: Any, cell_dir: Path) -> dict:
    steps = int(dict(cell.overrides).get("steps", 0))
    return {"metrics": {"accuracy": steps / 100}, "headline": "accuracy", "steps": steps}
