"""Each plugin's recipe agrees with the `project` column of docs/fidelity.yaml, and every project lr list
holds the paper's chosen lr (so a sweep can find it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.registry import BUILTIN, get_task

TABLE = yaml.safe_load((Path(__file__).resolve().parent.parent / "docs" / "fidelity.yaml").read_text())
MIXTURE_ONLY = {"hiertext", "textocr"}  # sources of the text-spotting mixture, reported nowhere


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", sorted(TABLE["tasks"]))
def test_recipe_matches_the_fidelity_table(name):
    entry = TABLE["tasks"][name]
    recipe = get_task(name).recipe(*entry["point"])
    for key, row in entry["fields"].items():
        assert {"paper", "big_vision", "project", "source"} <= set(row), f"{name}.{key}: a column is missing"
        assert _plain(getattr(recipe, key)) == row["project"], f"{name}.{key}: docs/fidelity.yaml says {row}"
    lr = entry["fields"].get("lr", {})
    grid = entry["fields"].get("lr_grid", {}).get("project")
    if grid is not None and lr.get("paper") is not None:
        assert lr["paper"] in grid, f"{name}: the paper's lr {lr['paper']} is not in the lr grid {grid}"


def test_every_reported_task_is_in_the_table():
    assert set(BUILTIN) - MIXTURE_ONLY <= set(TABLE["tasks"])
    assert all({"paper", "big_vision", "project", "source"} <= set(r) for r in TABLE["protocol"].values())
