"""Every table the project renders (Markdown, LaTeX, CSV, the fixed-width plan, the task listings), from
records a fake-runner grid writes. tests/golden/tables/ holds what the hand-written renderers produced
before the table writer moved onto pandas/tabulate; test_table_writer_golden.py holds the new code to them
byte for byte. tests/golden/tables_demo/ is the same grid with `demo: true`, written by the same old code
(before outputs said "demo scale" beyond tables.md). Edited by hand since in two places only: the rule
under the sensitivity table gained "a fall of more than 2 se *a drop*", and tasks.md lists the plugins
registered now (a row per plugin), and the plan files gained the dry run's "how each task picks its lr"
lines (regenerated with the code that writes them). Regenerate only on purpose, with the code to pin on PYTHONPATH:
python tests/helpers/golden_tables.py [--demo]
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "tables"
GOLDEN_DEMO = GOLDEN.with_name("tables_demo")  # the same grid with demo: true

GRID = textwrap.dedent("""
    name: golden
    demo: false
    tasks: [vqav2, docvqa, coco_captions]
    sizes: [nano-s, nano-m]
    resolutions: [32, 64]
    lrs: {default: [1.0e-4, 1.0e-3], coco_captions: [1.0e-3]}
    protocol:
      sweep: {resolution: 32, split: minival, seed: 0}
      final: {seeds: 2, split: eval}
    data_root: data
    checkpoints: random
    runner: tests.helpers.fake_runner:run
""")


def _plan(grid, workdir: Path) -> str:
    """The dry-run plan, with cell ids numbered (ids hash the cell's config, which may gain fields)."""
    from harness.run.plan import format_plan, plan_rows

    rows = [dataclasses.replace(r, cell_id=f"cell{i:02d}" if r.cell_id != "-" else "-")
            for i, r in enumerate(plan_rows(grid, workdir))]
    return format_plan(grid, rows) + "\n"


def render(root: Path, demo: bool = False) -> dict[str, str]:
    """Run the grid (and its random-init twin, the baseline) under `root`; return {name: text}."""
    from harness.run.grid import load_grid
    from harness.run.scheduler import run_grid
    from harness.task_listing import recipe_table, task_rows
    from results.tables import write_tables

    try:
        from results.tabular import markdown_rows as _markdown
    except ImportError:  # the code before the table writer moved, which made the golden files
        from harness.cli import _markdown

    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(GRID.replace("demo: false", f"demo: {str(demo).lower()}"))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        grid = load_grid("grid.yaml")
        out: dict[str, str] = {"plan_before.txt": _plan(grid, Path("golden"))}
        run_grid(grid, "golden", progress=False)
        run_grid(grid.random_init_twin(), "golden-random", progress=False)
        out["plan_after.txt"] = _plan(grid, Path("golden"))
        out["tables.md"] = write_tables("golden", "tables", baseline="golden-random")
        for path in sorted(Path("tables").iterdir()):
            if path.suffix in (".tex", ".csv"):
                out[path.name] = path.read_text(encoding="utf-8")
        out["tasks.md"] = _markdown(task_rows()) + "\n"
        out["recipes.md"] = _markdown(recipe_table("vqav2")) + "\n"
        out["empty.md"] = _markdown([]) + "\n"
    finally:
        os.chdir(cwd)
    return out


if __name__ == "__main__":
    import sys
    import tempfile

    demo = "--demo" in sys.argv
    target = GOLDEN_DEMO if demo else GOLDEN
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in render(Path(tmp), demo=demo).items():
            (target / name).write_text(text, encoding="utf-8")
            print(f"wrote {target / name}")
