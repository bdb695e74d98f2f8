"""Records -> the paper's tables as Markdown, CSV and LaTeX (plus the PNG plots of results/plots.py).

- Table 13 layout (facts §3.2): task rows, size-resolution columns, mean ± std over seeds of the
  headline metric x100, final phase.
- Table 14 layout (facts §3.3.1): rows task x size, columns the swept lrs, sweep phase, the lr the
  protocol picks in bold (results.lr_choice.select_best_lrs: the same rule the scheduler used).
- Sensitivity (Fig. 3): results/sensitivity.py.
Metric values are stored as fractions (CIDEr as pycocoevalcap returns it) and shown x100. A missing
cell shows "–". Only records are read, so tables can be rebuilt anywhere from a copied workdir.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from results.tabular import latex, markdown
from model.config import FAMILIES
from results import plots
from results.compare import tasks_won, versus
from results.lr_choice import format_lr, select_best_lrs
from results.sensitivity import ONE_SEED, RULE, sensitivities
from results.store import Record, load_records

MISSING = "–"
DEMO_BANNER = ("> **Demo scale.** These numbers come from tiny models trained on generated data. They show "
               "that the pipeline and the protocol work, not what PaliGemma 2 scores.")
DEMO_DETAIL = ("tiny models on generated data; the numbers show that the pipeline and the protocol work, not "
               "what PaliGemma 2 scores")
DEMO_LINE = f"demo scale: {DEMO_DETAIL}"
SIZE_ORDER = [s for spec in FAMILIES.values() for s in spec["sizes"]]


def _write_csv(frame: pd.DataFrame, path: Path, demo: bool) -> None:
    """A demo grid's CSV starts with a `# demo scale: ...` comment line (pandas: read_csv(comment="#"))."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        if demo:
            f.write(f"# {DEMO_LINE}\n")
        frame.to_csv(f, index=False)


def _caption(caption: str, demo: bool) -> str:
    """A LaTeX caption, led by "Demo scale." for a demo grid."""
    return f"Demo scale ({DEMO_DETAIL}). {caption}" if demo else caption


def size_key(size: str) -> tuple[int, str]:
    return (SIZE_ORDER.index(size) if size in SIZE_ORDER else len(SIZE_ORDER), size)


def latest_records(records: Iterable[Record]) -> tuple[list[Record], int]:
    """One record per (phase, task, size, resolution, lr, seed), the newest; and how many were dropped.

    A cell rerun with changed overrides gets a new id, so a workdir can hold two runs of one cell.
    """
    latest: dict[tuple, Record] = {}
    records = list(records)
    for r in sorted(records, key=lambda r: r.created):
        latest[r.phase, r.task, r.size, r.resolution, r.lr, r.seed] = r
    return list(latest.values()), len(records) - len(latest)


def records_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record; score = headline metric x100 (NaN when the runner did not report it)."""
    columns = ["phase", "task", "size", "resolution", "lr", "seed", "split", "metric", "score"]
    rows = [{"phase": r.phase, "task": r.task, "size": r.size, "resolution": r.resolution, "lr": r.lr,
             "seed": r.seed, "split": r.split, "metric": r.headline,
             "score": math.nan if r.score is None else 100.0 * r.score} for r in records]
    return pd.DataFrame(rows, columns=columns)


def final_cells(df: pd.DataFrame, chosen: dict[tuple[str, str], float]) -> tuple[pd.DataFrame, list[str]]:
    """mean/std/n per (task, size, resolution) of the final phase, and notes on what was dropped.

    A (task, size) should have one final lr. If a changed grid left several, the sweep's choice is
    kept (or, without sweep records, the lr with most runs).
    """
    final = df[df["phase"] == "final"]
    notes, keep = [], []
    for (task, size), group in final.groupby(["task", "size"], sort=False):
        lrs = group["lr"].unique()
        lr = lrs[0]
        if len(lrs) > 1:
            lr = chosen.get((task, size), group["lr"].value_counts().idxmax())
            notes.append(f"{task} {size}: final runs exist at lrs {', '.join(format_lr(x) for x in sorted(lrs))}; "
                         f"showing lr {format_lr(lr)}")
        keep.append(group[group["lr"] == lr])
    final = pd.concat(keep) if keep else final
    cells = final.groupby(["task", "size", "resolution"]).agg(
        mean=("score", "mean"), std=("score", "std"), n=("score", "count"), metric=("metric", "first"))
    return cells, notes


def _mean_std(mean: float, std: float, n: int, n_max: int) -> str:
    if n == 0 or math.isnan(mean):
        return MISSING
    text = f"{mean:.1f}" if n < 2 else f"{mean:.1f} ± {std:.1f}"
    return text if n == n_max else f"{text} (n={n})"


def table13(cells: pd.DataFrame, sizes: list[str], resolutions: list[int]) -> pd.DataFrame:
    columns = [(s, r) for r in resolutions for s in sizes]
    n_max = int(cells["n"].max()) if len(cells) else 0
    rows = {}
    for task in sorted(cells.index.get_level_values(0).unique()):
        row = {"metric": cells.xs(task, level=0)["metric"].iloc[0]}
        for s, r in columns:
            c = cells.loc[(task, s, r)] if (task, s, r) in cells.index else None
            row[f"{s}-{r}"] = MISSING if c is None else _mean_std(c["mean"], c["std"], int(c["n"]), n_max)
        rows[task] = row
    return pd.DataFrame.from_dict(rows, orient="index", columns=["metric"] + [f"{s}-{r}" for s, r in columns])


def sweep_table(df: pd.DataFrame, chosen: dict) -> tuple[pd.DataFrame, set[tuple[str, str]], pd.DataFrame]:
    """(display frame, cells to bold, tidy CSV frame) of the lr sweep."""
    sweep = df[df["phase"] == "sweep"]
    scores = sweep.groupby(["task", "size", "lr"]).agg(score=("score", "mean"), metric=("metric", "first"))
    lrs = sorted(sweep["lr"].unique())
    pairs = sorted({(t, s) for t, s, _ in scores.index}, key=lambda p: (p[0], size_key(p[1])))
    rows, bold, tidy = {}, set(), []
    for task, size in pairs:
        label = f"{task} {size}"
        best = chosen[task, size].lr
        row = {"metric": scores.loc[(task, size)]["metric"].iloc[0]}
        for lr in lrs:
            value = scores["score"].get((task, size, lr), math.nan)
            row[format_lr(lr)] = MISSING if math.isnan(value) else f"{value:.1f}"
            if lr == best and not math.isnan(value):
                bold.add((label, format_lr(lr)))
            if (task, size, lr) in scores.index:
                tidy.append({"task": task, "size": size, "lr": lr, "metric": row["metric"],
                             "score": value, "best": lr == best})
        row["best lr"] = format_lr(best)
        rows[label] = row
    display = pd.DataFrame.from_dict(rows, orient="index",
                                     columns=["metric"] + [format_lr(lr) for lr in lrs] + ["best lr"])
    return display, bold, pd.DataFrame(tidy, columns=["task", "size", "lr", "metric", "score", "best"])


def sensitivity_table(sens: list, sizes: list[str], resolutions: list[int]) -> pd.DataFrame:
    s1, r1 = sizes[0], resolutions[0]
    res_col = f"res gain {r1}→{resolutions[1]} @{s1}" if len(resolutions) > 1 else "res gain"
    size_col = f"size gain {s1}→{sizes[1]} @{r1}" if len(sizes) > 1 else "size gain"

    def gain(g) -> str:
        if g is None:
            return MISSING
        if not g.has_interval:
            return f"{g.value:+.1f} ({ONE_SEED})"
        note = ", within noise" if g.within_noise else ", a drop" if g.drop else ""
        return f"{g.value:+.1f} (2se {2 * g.se:.1f}{note})"

    def base(s) -> str:
        if s.base is None:
            return MISSING
        return f"{s.base:.1f}" if s.base_std is None else f"{s.base:.1f} ± {s.base_std:.1f}"

    rows = {s.task: {"metric": s.metric, f"{s1}-{r1}": base(s),
                     res_col: gain(s.resolution), size_col: gain(s.size), "label": s.label} for s in sens}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["metric", f"{s1}-{r1}", res_col, size_col, "label"])


def sensitivity_csv(sens: list) -> pd.DataFrame:
    return pd.DataFrame([{"task": s.task, "metric": s.metric, "base": s.base,
                          "res_gain": None if s.resolution is None else s.resolution.value,
                          "res_se": None if s.resolution is None else s.resolution.se,
                          "size_gain": None if s.size is None else s.size.value,
                          "size_se": None if s.size is None else s.size.se,
                          "base_std": s.base_std,
                          "seeds": None if s.resolution is None or s.size is None
                          else min(s.resolution.seeds, s.size.seeds), "label": s.label} for s in sens],
                        columns=["task", "metric", "base", "res_gain", "res_se", "size_gain", "size_se",
                                 "base_std", "seeds", "label"])


# --- rendering ------------------------------------------------------------------------------------

# markdown() and latex() are the project's one table writer, results/tabular.py.


def _final_cells_of(workdir: Path) -> tuple[pd.DataFrame, list[str], list[Record], pd.DataFrame, dict]:
    records, _ = latest_records(load_records(workdir))
    df = records_frame(records)
    chosen = select_best_lrs(records)
    cells, notes = final_cells(df, {pair: c.lr for pair, c in chosen.items()})
    return cells, notes, records, df, chosen


def version_mix(records: Iterable[Record]) -> str | None:
    """One line when the records of one grid come from different plugin or project versions, else None:
    their numbers may not be comparable (a changed prompt, metric or recipe)."""
    tasks: dict[str, set] = {}
    projects: set = set()
    for r in records:
        tasks.setdefault(r.task, set()).add(r.config.get("task_version"))
        projects.add(r.config.get("project_version"))
    mixed = [f"{t} plugin versions {sorted(map(str, v))}" for t, v in sorted(tasks.items()) if len(v) > 1]
    if len(projects) > 1:
        mixed.append(f"project versions {sorted(map(str, projects))}")
    return f"warning: records mix {'; '.join(mixed)}; rerun the older cells to compare like with like" \
        if mixed else None


def write_tables(workdir: str | Path, out_dir: str | Path | None = None,
                 baseline: str | Path | None = None) -> str:
    """Write tables.md, *.csv, *.tex and *.png into out_dir (default workdir/tables); return the Markdown.
    With `baseline` (another workdir), also the cell-by-cell comparison against it (results/compare.py)."""
    workdir = Path(workdir)
    out = Path(out_dir) if out_dir is not None else workdir / "tables"
    _, superseded = latest_records(load_records(workdir))
    cells, notes, records, df, chosen = _final_cells_of(workdir)
    mix = version_mix(records)
    if mix:
        print(f"{workdir}: {mix}", file=sys.stderr)
    final = df[df["phase"] == "final"]
    sizes = sorted(final["size"].unique(), key=size_key)
    resolutions = sorted(int(r) for r in final["resolution"].unique())
    out.mkdir(parents=True, exist_ok=True)

    demo = any(r.demo for r in records)
    parts = [DEMO_BANNER, ""] if demo else []
    parts += [f"# Results: {workdir.name}", "", f"{len(records)} records."]
    if superseded:
        parts.append(f"{superseded} older record(s) of rerun cells are superseded by newer ones.")

    t13 = table13(cells, sizes, resolutions)
    splits = ", ".join(sorted(final["split"].unique())) or MISSING
    caption13 = (f"Final runs (Table 13 layout): mean ± std over seeds (sample std) of the headline metric "
                 f"x100, split: {splits}. – = no record.")
    parts += ["", "## Final runs (Table 13 layout)", "", markdown(t13, "task"), "", caption13]
    parts += [f"Note: {n}." for n in notes]
    _write_csv(cells.reset_index(), out / "table13.csv", demo)
    (out / "table13.tex").write_text(latex(t13, "task", _caption(caption13, demo)), encoding="utf-8")

    sweep, bold, sweep_csv = sweep_table(df, chosen)
    sweep_split = ", ".join(sorted(df[df["phase"] == "sweep"]["split"].unique())) or MISSING
    caption14 = (f"Learning-rate sweep (Table 14 layout): headline metric x100, split: {sweep_split}. "
                 "Bold: the lr the protocol picks (highest; ties to the smaller lr). – = no record.")
    parts += ["", "## Learning-rate sweep (Table 14 layout)", ""]
    if sweep.empty:
        parts.append("No sweep records: this grid ran one lr per task and size, so there was nothing to pick "
                     "(a grid sweeps lrs when its `protocol` has a `sweep` entry, as configs/grids/paper.yaml "
                     "does).")
    else:
        parts += [markdown(sweep, "task size", bold), "", caption14]
    _write_csv(sweep_csv, out / "lr_sweep.csv", demo)
    (out / "lr_sweep.tex").write_text(latex(sweep, "task size", _caption(caption14, demo), bold), encoding="utf-8")

    sens = sensitivities(cells, sizes, resolutions)
    if sens:
        st = sensitivity_table(sens, sizes, resolutions)
        caption = ("Sensitivity (Fig. 3): gain in points x100 from the lowest to the next resolution at the "
                   "smallest size, and from the smallest to the next size at the lowest resolution. " + RULE)
        parts += ["", "## Resolution vs size sensitivity (Fig. 3)", "", markdown(st, "task"), "", caption]
        (out / "sensitivity.tex").write_text(latex(st, "task", _caption(caption, demo)), encoding="utf-8")
    _write_csv(sensitivity_csv(sens), out / "sensitivity.csv", demo)

    plots.gains_scatter(sens, out / "sensitivity.png", demo=demo)
    plots.lr_sweep_curves(sweep_csv, chosen, out / "lr_sweep.png", demo=demo)
    pngs = ["sensitivity.png", "lr_sweep.png"]
    if baseline is not None:
        baseline = Path(baseline)
        base_cells = _final_cells_of(baseline)[0]
        vs, tidy = versus(cells, base_cells, sizes, resolutions)
        won, compared = tasks_won(tidy)
        caption = (f"Final runs of {workdir.name} / {baseline.name} ({baseline}), headline metric x100, per "
                   f"size-resolution cell; mean diff: the mean over a task's cells of the difference; cells "
                   f"won: cells where {workdir.name} scores higher. {workdir.name} wins {won} of {compared} "
                   f"tasks (positive mean diff).")
        parts += ["", f"## Against {baseline.name}", "", markdown(vs, "task"), "", caption]
        _write_csv(tidy, out / "versus.csv", demo)
        (out / "versus.tex").write_text(latex(vs, "task", _caption(caption, demo)), encoding="utf-8")
        plots.versus_bars(tidy, baseline.name, out / "versus.png", sizes, demo=demo)
        pngs.append("versus.png")
    parts += ["", f"Plots beside this file: {', '.join(pngs)}."]
    text = "\n".join(parts) + "\n"
    (out / "tables.md").write_text(text, encoding="utf-8")
    return text
