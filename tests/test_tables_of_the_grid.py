"""`run` and `tables` report the cells of the grid that ran (workdir/grid_cells.json), so an override
undone (steps 6 -> 12 -> 6) tables the 6-step records again, never the newer 12-step ones."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.cli import main

GRID = """\
name: revert
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
data_root: {data}
checkpoints: random
runner: tests.helpers.steps_runner:run
overrides:
  all: {{steps: {steps}}}
"""


def _run(tmp_path: Path, steps: int, capsys) -> str:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(data=tmp_path / "data", steps=steps))
    assert main(["run", str(grid), "--workdir", str(tmp_path / "wd"), "--quiet"]) == 0
    return capsys.readouterr().out


def _final_row(markdown: str) -> str:
    """The vqav2 row of the final-runs table (the first table of tables.md)."""
    section = markdown.split("## Final runs", 1)[1].split("##", 1)[0]
    return next(line for line in section.splitlines() if line.startswith("| vqav2"))


def test_an_override_undone_tables_the_grids_own_records(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_MEMORY_CHECK", "0")
    assert "| 6.0 |" in _final_row(_run(tmp_path, 6, capsys))
    assert "| 12.0 |" in _final_row(_run(tmp_path, 12, capsys))
    out = _run(tmp_path, 6, capsys)  # nothing reruns: the 6-step record exists, and it is the grid's
    assert "| 6.0 |" in _final_row(out)
    assert main(["tables", str(tmp_path / "wd")]) == 0
    again = capsys.readouterr().out
    assert "| 6.0 |" in _final_row(again)
    others = pd.read_csv(tmp_path / "wd" / "tables" / "other_records.csv")
    assert sorted(others["score"].round(1)) == [12.0]
