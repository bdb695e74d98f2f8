"""Records -> the paper's tables as Markdown, CSV and LaTeX (plus the PNG plots of results/plots.py).

- Table 13 layout (facts §3.2): task rows, size-resolution columns, mean ± std over seeds of the
  headline metric x100, final phase.
- Table 14 layout (facts §3.3.1): rows task x size, columns the swept lrs, sweep phase, the lr the
  protocol picks in bold (results.lr_choice.select_best_lrs: the same rule the scheduler used).
- Sensitivity (Fig. 3): results/sensitivity.py.
Metric values are stored as fractions (CIDEr as pycocoevalcap returns it) and shown x100. A missing
cell shows "–". Only records are read, so tables can be rebuilt anywhere from a copied workdir.

Which records: the tables show the cells of one grid, named by the caller (`write_tables(cell_ids=...)`:
the grid's cell ids, or its cells). A workdir also keeps the records of configurations the grid no longer
expands to (a base checkpoint since replaced or put back, a recipe override since undone); those are listed
apart ("Other records", other_records.csv) and never enter a table, whichever is newer. Without ids (a
workdir whose grid is unknown) every record counts and the newest of each (phase, task, size, resolution,
lr, seed) wins. `paligemma-transfer run` passes its grid's cells; `tables` passes the cells the scheduler
saved in workdir/grid_cells.json, and uses every record only in a workdir that has no such file.

Where: files go to `out_dir`, else workdir/tables; a workdir that cannot be written (a finished run on a
read-only mount) gets its files in a new folder under the system's temp dir, named on stderr. The workdir,
`out_dir` and a baseline may each be a local folder or a bucket URL (gs://bucket/run; results/paths.py). The
Markdown is returned either way (the CLI prints it).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from model.config import FAMILIES
from results import plots
from results.compare import tasks_won, versus
from results.lr_choice import format_lr, select_best_lrs
from results.paths import AnyPath, as_path, is_remote, make_dirs, write_object, write_text
from results.sensitivity import ONE_SEED, RULE, sensitivities
from results.store import Record, load_records
from results.tabular import latex, markdown

MISSING = "–"
DEMO_BANNER = ("> **Demo scale.** These numbers come from tiny models trained on generated data. They show "
               "that the pipeline and the protocol work, not what PaliGemma 2 scores.")
DEMO_DETAIL = ("tiny models on generated data; the numbers show that the pipeline and the protocol work, not "
               "what PaliGemma 2 scores")
SIZE_ORDER = [s for spec in FAMILIES.values() for s in spec["sizes"]]


DEMO_COLUMN = "scale"  # a demo grid's CSVs end in this column, "demo scale" in every row
DEMO_VALUE = "demo scale"
OTHER_RECORDS_SHOWN = 50  # rows of the "Other records" listing in tables.md (other_records.csv has all)


def _write_csv(frame: pd.DataFrame, path: AnyPath, demo: bool) -> None:
    """A plain CSV that `pandas.read_csv(path)` reads as is; a demo grid's gains a last column
    `scale` = "demo scale" (a comment line would turn into a garbled header under a plain read_csv)."""
    if demo:
        frame = frame.assign(**{DEMO_COLUMN: DEMO_VALUE})
    if is_remote(path):
        write_object(path, frame.to_csv(index=False).encode("utf-8"))
        return
    with open(path, "w", encoding="utf-8", newline="") as f:
        frame.to_csv(f, index=False)


def _caption(caption: str, demo: bool) -> str:
    """A LaTeX caption, led by "Demo scale." for a demo grid."""
    return f"Demo scale ({DEMO_DETAIL}). {caption}" if demo else caption


def size_key(size: str) -> tuple[int, str]:
    return (SIZE_ORDER.index(size) if size in SIZE_ORDER else len(SIZE_ORDER), size)


class GridCell(Protocol):
    """What the tables need of a grid's cell (harness' Cell has it): its id, and where it goes when it has
    no record yet."""

    cell_id: str
    task: str
    size: str
    resolution: int
    lr: float
    seed: int
    phase: str


@dataclass(frozen=True)
class Selection:
    """The records one set of tables shows, and what was left out of them."""

    records: list[Record]  # shown in the tables
    others: list[Record] = field(default_factory=list)  # in the workdir, not cells of the grid
    missing: list[str] = field(default_factory=list)  # ids of the grid's cells without a record
    expected: list[GridCell] = field(default_factory=list)  # the grid's cells given with their place
    grid_size: int | None = None  # how many cells the grid has (None: no ids given)
    superseded: int = 0  # without ids: older records of one (phase, task, size, res, lr, seed) dropped


def latest_records(records: Iterable[Record]) -> tuple[list[Record], int]:
    """One record per (phase, task, size, resolution, lr, seed), the newest; and how many were dropped.

    Only for a workdir whose grid is unknown: "newest" is not "the grid's" (a checkpoint put back, an
    override undone, leaves the grid's own records older than the other configuration's).
    """
    latest: dict[tuple, Record] = {}
    records = list(records)
    for r in sorted(records, key=lambda r: r.created):
        latest[r.phase, r.task, r.size, r.resolution, r.lr, r.seed] = r
    return list(latest.values()), len(records) - len(latest)


def select_records(records: Iterable[Record], cell_ids: Iterable[str | GridCell] | None = None) -> Selection:
    """The grid's records, by id: exactly the records of `cell_ids`, the rest listed apart as others.

    An item of `cell_ids` is an id or a cell (anything with cell_id, task, size, resolution, lr, seed and
    phase); a cell without a record keeps its place in the tables as "–". Without ids, every record
    (newest per (phase, task, size, resolution, lr, seed)).
    """
    records = list(records)
    if cell_ids is None:
        latest, superseded = latest_records(records)
        return Selection(records=latest, superseded=superseded)
    items = list(cell_ids)
    ids = [c if isinstance(c, str) else c.cell_id for c in items]
    wanted = set(ids)
    have = {r.cell_id for r in records}
    return Selection(records=[r for r in records if r.cell_id in wanted],
                     others=sorted((r for r in records if r.cell_id not in wanted),
                                   key=lambda r: (r.created, r.cell_id)),
                     missing=sorted(i for i in wanted if i not in have),
                     expected=[c for c in items if not isinstance(c, str)], grid_size=len(wanted))


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


def table13(cells: pd.DataFrame, sizes: list[str], resolutions: list[int],
            tasks: Iterable[str] = ()) -> pd.DataFrame:
    """Task rows (those with records, and `tasks`: the grid's, a row of "–" until one has a record)."""
    columns = [(s, r) for r in resolutions for s in sizes]
    n_max = int(cells["n"].max()) if len(cells) else 0
    known = set(cells.index.get_level_values(0).unique())
    rows = {}
    for task in sorted(known | set(tasks)):
        row = {"metric": cells.xs(task, level=0)["metric"].iloc[0] if task in known else MISSING}
        for s, r in columns:
            c = cells.loc[(task, s, r)] if (task, s, r) in cells.index else None
            row[f"{s}-{r}"] = MISSING if c is None else _mean_std(c["mean"], c["std"], int(c["n"]), n_max)
        rows[task] = row
    return pd.DataFrame.from_dict(rows, orient="index", columns=["metric"] + [f"{s}-{r}" for s, r in columns])


def sweep_table(df: pd.DataFrame, chosen: dict, planned: Iterable[GridCell] = ()
                ) -> tuple[pd.DataFrame, set[tuple[str, str]], pd.DataFrame]:
    """(display frame, cells to bold, tidy CSV frame) of the lr sweep; `planned`: the grid's sweep cells,
    so that one without a record still has its row and column ("–")."""
    sweep = df[df["phase"] == "sweep"]
    planned = [c for c in planned if c.phase == "sweep"]
    scores = sweep.groupby(["task", "size", "lr"]).agg(score=("score", "mean"), metric=("metric", "first"))
    lrs = sorted({float(lr) for lr in sweep["lr"].unique()} | {float(c.lr) for c in planned})
    have = {(t, s) for t, s, _ in scores.index}
    pairs = sorted(have | {(c.task, c.size) for c in planned}, key=lambda p: (p[0], size_key(p[1])))
    rows, bold, tidy = {}, set(), []
    for task, size in pairs:
        label = f"{task} {size}"
        best = chosen[task, size].lr if (task, size) in chosen else None
        row = {"metric": scores.loc[(task, size)]["metric"].iloc[0] if (task, size) in have else MISSING}
        for lr in lrs:
            value = scores["score"].get((task, size, lr), math.nan)
            row[format_lr(lr)] = MISSING if math.isnan(value) else f"{value:.1f}"
            if lr == best and not math.isnan(value):
                bold.add((label, format_lr(lr)))
            if (task, size, lr) in scores.index:
                tidy.append({"task": task, "size": size, "lr": lr, "metric": row["metric"],
                             "score": value, "best": lr == best})
        row["best lr"] = MISSING if best is None else format_lr(best)
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


@dataclass(frozen=True)
class _Tables:
    """One workdir's selected records and what the tables compute from them."""

    selection: Selection
    df: pd.DataFrame
    chosen: dict  # (task, size) -> LrChoice, from the shown sweep records of complete sweeps
    cells: pd.DataFrame  # final-phase mean/std/n/metric per (task, size, resolution)
    notes: list[str]


def _compute(workdir: AnyPath, cell_ids: Iterable[str | GridCell] | None) -> _Tables:
    selection = select_records(load_records(workdir), cell_ids)
    df = records_frame(selection.records)
    chosen = select_best_lrs(selection.records)
    # As the scheduler: no pick for a (task, size) whose sweep still misses a cell.
    missing = set(selection.missing)
    chosen = {pair: c for pair, c in chosen.items()
              if not any(e.cell_id in missing and e.phase == "sweep" and (e.task, e.size) == pair
                         for e in selection.expected)}
    cells, notes = final_cells(df, {pair: c.lr for pair, c in chosen.items()})
    return _Tables(selection, df, chosen, cells, notes)


def _out_dir(workdir: AnyPath, out_dir: str | os.PathLike | None) -> AnyPath:
    """`out_dir` when given; else workdir/tables, or a new temp folder when the workdir cannot be written."""
    if out_dir is not None:
        out = as_path(out_dir)
        make_dirs(out)
        return out
    out = workdir / "tables"
    try:
        make_dirs(out)
        _check_writable(out)
    except OSError as e:
        fallback = Path(tempfile.mkdtemp(prefix=f"{workdir.name}-tables-"))
        print(f"{workdir}: cannot write {out} ({e.strerror or e}); tables written to {fallback} instead "
              "(`tables --out DIR` picks the folder)", file=sys.stderr)
        return fallback
    return out


def _check_writable(folder: AnyPath) -> None:
    """Create and remove a file in `folder`: the only test that a read-only mount fails (and root too).
    On a bucket, an empty object written and deleted (an object store has no exclusive create)."""
    probe = folder / f".write-probe-{os.getpid()}"
    if is_remote(probe):
        write_object(probe, b"")
        probe.unlink()
        return
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    probe.unlink()


def other_records_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Records that are not cells of the grid being reported: what they were and when, never in a table."""
    columns = ["cell_id", "phase", "task", "size", "resolution", "lr", "seed", "split", "metric", "score",
               "created"]
    rows = [{"cell_id": r.cell_id, "phase": r.phase, "task": r.task, "size": r.size, "resolution": r.resolution,
             "lr": r.lr, "seed": r.seed, "split": r.split, "metric": r.headline,
             "score": math.nan if r.score is None else 100.0 * r.score, "created": r.created} for r in records]
    return pd.DataFrame(rows, columns=columns)


def _other_records_md(others: list[Record]) -> list[str]:
    frame = other_records_frame(others[:OTHER_RECORDS_SHOWN])
    frame["lr"] = [format_lr(lr) for lr in frame["lr"]]
    frame["score"] = [MISSING if math.isnan(v) else f"{v:.1f}" for v in frame["score"]]
    more = len(others) - OTHER_RECORDS_SHOWN
    parts = ["", "## Other records (not in the tables)", "",
             "Records in this workdir of cells the grid does not expand to now (another base checkpoint, "
             "recipe, override or grid); newest last. No table above uses them.", "",
             markdown(frame.astype(str))]
    if more > 0:
        parts += ["", f"... and {more} more: other_records.csv lists them all."]
    return parts


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


def write_tables(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 baseline: str | os.PathLike | None = None, *, cell_ids: Iterable[str | GridCell] | None = None,
                 baseline_cell_ids: Iterable[str | GridCell] | None = None) -> str:
    """Write tables.md, *.csv, *.tex and *.png; return the Markdown.

    cell_ids: the cells of the grid being reported (ids, or cells that also place a missing one); the
    tables use exactly their records and list the workdir's other records apart. None (a workdir whose
    grid is unknown): every record, the newest of each (phase, task, size, resolution, lr, seed).
    out_dir: default workdir/tables, or a temp folder named on stderr when the workdir is read-only.
    baseline: another workdir, compared cell by cell (results/compare.py); baseline_cell_ids its grid's.
    """
    workdir = as_path(workdir)
    t = _compute(workdir, cell_ids)
    sel, df, chosen, cells, notes = t.selection, t.df, t.chosen, t.cells, t.notes
    records = sel.records
    mix = version_mix(records)
    if mix:
        print(f"{workdir}: {mix}", file=sys.stderr)
    final = df[df["phase"] == "final"]
    planned_final = [c for c in sel.expected if c.phase == "final"]
    sizes = sorted(set(final["size"].unique()) | {c.size for c in planned_final}, key=size_key)
    resolutions = sorted({int(r) for r in final["resolution"].unique()} | {int(c.resolution) for c in planned_final})
    out = _out_dir(workdir, out_dir)

    demo = any(r.demo for r in records)
    parts = [DEMO_BANNER, ""] if demo else []
    parts += [f"# Results: {workdir.name}", ""]
    if sel.grid_size is None:
        parts.append(f"{len(records)} records.")
    else:
        parts.append(f"{len(records)} records of the grid's {sel.grid_size} cells.")
    if sel.missing:
        shown = ", ".join(sel.missing[:10]) + (f" and {len(sel.missing) - 10} more" if len(sel.missing) > 10 else "")
        parts.append(f"No record yet (– in the tables): {shown}.")
    if sel.others:
        parts.append(f"{len(sel.others)} other record(s) in this workdir are not cells of this grid: listed "
                     "apart at the end and in other_records.csv, never in the tables.")
    if sel.superseded:
        parts.append(f"{sel.superseded} older record(s) of rerun cells are superseded by newer ones.")

    t13 = table13(cells, sizes, resolutions, tasks={c.task for c in planned_final})
    splits = ", ".join(sorted(final["split"].unique())) or MISSING
    caption13 = (f"Final runs (Table 13 layout): mean ± std over seeds (sample std) of the headline metric "
                 f"x100, split: {splits}. – = no record.")
    parts += ["", "## Final runs (Table 13 layout)", "", markdown(t13, "task"), "", caption13]
    parts += [f"Note: {n}." for n in notes]
    _write_csv(_with_missing_cells(cells, planned_final).reset_index(), out / "table13.csv", demo)
    write_text(out / "table13.tex", latex(t13, "task", _caption(caption13, demo)))

    sweep, bold, sweep_csv = sweep_table(df, chosen, sel.expected)
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
    write_text(out / "lr_sweep.tex", latex(sweep, "task size", _caption(caption14, demo), bold))

    sens = sensitivities(cells, sizes, resolutions)
    if sens:
        st = sensitivity_table(sens, sizes, resolutions)
        caption = ("Sensitivity (Fig. 3): gain in points x100 from the lowest to the next resolution at the "
                   "smallest size, and from the smallest to the next size at the lowest resolution. " + RULE)
        parts += ["", "## Resolution vs size sensitivity (Fig. 3)", "", markdown(st, "task"), "", caption]
        write_text(out / "sensitivity.tex", latex(st, "task", _caption(caption, demo)))
    _write_csv(sensitivity_csv(sens), out / "sensitivity.csv", demo)

    plots.gains_scatter(sens, out / "sensitivity.png", demo=demo)
    pngs = ["sensitivity.png"]
    if sweep_csv.empty:  # a grid without a sweep has no curves to draw; an old file would mislead
        (out / "lr_sweep.png").unlink(missing_ok=True)
    else:
        plots.lr_sweep_curves(sweep_csv, chosen, out / "lr_sweep.png", demo=demo)
        pngs.append("lr_sweep.png")
    if baseline is not None:
        baseline = as_path(baseline)
        base_cells = _compute(baseline, baseline_cell_ids).cells
        vs, tidy = versus(cells, base_cells, sizes, resolutions)
        won, compared = tasks_won(tidy)
        caption = (f"Final runs of {workdir.name} / {baseline.name} ({baseline}), headline metric x100, per "
                   f"size-resolution cell; mean diff: the mean over a task's cells of the difference; cells "
                   f"won: cells where {workdir.name} scores higher. {workdir.name} wins {won} of {compared} "
                   f"tasks (positive mean diff).")
        parts += ["", f"## Against {baseline.name}", "", markdown(vs, "task"), "", caption]
        _write_csv(tidy, out / "versus.csv", demo)
        write_text(out / "versus.tex", latex(vs, "task", _caption(caption, demo)))
        plots.versus_bars(tidy, baseline.name, out / "versus.png", sizes, demo=demo)
        pngs.append("versus.png")
    if sel.grid_size is not None:
        _write_csv(other_records_frame(sel.others), out / "other_records.csv", demo)
        if sel.others:
            parts += _other_records_md(sel.others)
    else:
        (out / "other_records.csv").unlink(missing_ok=True)
    parts += ["", f"Plots beside this file: {', '.join(pngs)}."]
    text = "\n".join(parts) + "\n"
    write_text(out / "tables.md", text)
    return text


def _with_missing_cells(cells: pd.DataFrame, planned_final: list[GridCell]) -> pd.DataFrame:
    """`cells` plus a row with n = 0 for each (task, size, resolution) of the grid without a final record."""
    keys = sorted({(c.task, c.size, int(c.resolution)) for c in planned_final} - set(cells.index))
    if not keys:
        return cells
    metric = {task: cells.xs(task, level=0)["metric"].iloc[0]
              for task in cells.index.get_level_values(0).unique()}
    extra = pd.DataFrame([{"mean": math.nan, "std": math.nan, "n": 0, "metric": metric.get(k[0], MISSING)}
                          for k in keys], index=pd.MultiIndex.from_tuples(keys, names=cells.index.names))
    return pd.concat([cells, extra]).sort_index()
