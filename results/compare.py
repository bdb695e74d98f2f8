"""One grid against a baseline grid, cell by cell: does starting from a pretrained checkpoint help?

Typically: does fine-tuning the nano family beat fine-tuning random init with the same steps
(`run --random-init`)? Both workdirs' final-phase cells (mean over seeds of the headline metric x100,
results.tables.final_cells) are matched on (task, size, resolution). A task *wins* when the mean of
its per-cell differences over the cells both grids have is positive; the per-cell counts are shown
beside it so a narrow win is visible.
"""

from __future__ import annotations

import math

import pandas as pd

MISSING = "–"


def versus(cells: pd.DataFrame, base: pd.DataFrame, sizes: list[str],
           resolutions: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display frame, tidy frame). Display: per task, 'ours / baseline' per size-resolution column,
    then the mean difference and 'cells won / cells compared'. Tidy: one row per matched cell."""
    tidy = []
    for key in cells.index.intersection(base.index):
        a, b = float(cells.loc[key, "mean"]), float(base.loc[key, "mean"])
        if not (math.isnan(a) or math.isnan(b)):
            tidy.append({"task": key[0], "size": key[1], "resolution": key[2], "score": a, "baseline": b,
                         "diff": a - b, "metric": cells.loc[key, "metric"]})
    tidy = pd.DataFrame(tidy, columns=["task", "size", "resolution", "metric", "score", "baseline", "diff"])
    columns = [f"{s}-{r}" for r in resolutions for s in sizes]
    rows = {}
    for task, group in tidy.groupby("task", sort=True):
        row = {c: MISSING for c in columns}
        for _, c in group.iterrows():
            row[f"{c['size']}-{c['resolution']}"] = f"{c['score']:.1f} / {c['baseline']:.1f}"
        won = int((group["diff"] > 0).sum())
        row["mean diff"] = f"{group['diff'].mean():+.1f}"
        row["cells won"] = f"{won}/{len(group)}"
        rows[task] = row
    display = pd.DataFrame.from_dict(rows, orient="index", columns=columns + ["mean diff", "cells won"])
    return display, tidy


def tasks_won(tidy: pd.DataFrame) -> tuple[int, int]:
    """(tasks whose mean per-cell difference is positive, tasks compared)."""
    means = tidy.groupby("task")["diff"].mean()
    return int((means > 0).sum()), len(means)
