"""PNG plots of the results (matplotlib, Agg: no display needed): Fig. 3 and Fig. 5 of the paper, in style.

- gains_scatter: per task, the resolution gain (x) against the size gain (y), each point labelled
  with its task and sensitivity label, and the diagonal where both gains are equal. Error bars (2 se)
  only where both cells have two seeds or more; the title says which (one seed: no error bars).
- lr_sweep_curves: one panel per task, headline metric x100 against lr (log axis), a line per size,
  the protocol's pick starred. results/tables.py draws it only for a grid with a sweep.
- versus_bars: per task, score minus a baseline's per size-resolution cell.
A demo grid's plots say "[demo scale]" in their title and in the PNG's Title/Description metadata.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import pandas as pd  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from results.paths import AnyPath, as_path, is_remote, write_object  # noqa: E402
from results.sensitivity import Sensitivity  # noqa: E402

DEMO_TAG = "[demo scale] "


def _save(fig, path: str | os.PathLike, title: str, demo: bool) -> AnyPath:
    """Write the PNG with its title (and, for a demo grid, "demo scale") in its metadata too, so the file
    says what it is to a reader that sees no pixels. A bucket path gets the PNG rendered into memory and
    written as one object (savefig only writes to local files and file objects)."""
    fig.tight_layout()
    metadata = {"Title": (DEMO_TAG if demo else "") + title}
    if demo:
        metadata["Description"] = ("demo scale: tiny models on generated data; the numbers show that the "
                                   "pipeline and the protocol work, not what PaliGemma 2 scores")
    if is_remote(path):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120, metadata=metadata)
        write_object(as_path(path), buffer.getvalue())
    else:
        fig.savefig(path, dpi=120, metadata=metadata)
    plt.close(fig)
    return as_path(path)


def _points(size: float | str) -> float:
    """A matplotlib font size (points, or a name such as "large") in points."""
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=size).get_size_in_points()


def _wrapped(fig, text: str, fontsize: float) -> str:
    """`text` broken into lines that fit the figure's width (about 0.55 em per character; a title that
    runs past the edge is cut off in the PNG)."""
    width_pt = 0.92 * fig.get_figwidth() * 72
    return textwrap.fill(text, width=max(20, int(width_pt / (0.55 * fontsize))), break_on_hyphens=False)


def _error_bar_note(points: list[Sensitivity]) -> str:
    """What the error bars are, as the title says it: none at all with one seed."""
    gains = [g for s in points for g in (s.resolution, s.size)]
    if not gains or not any(g.has_interval for g in gains):
        return "one seed: no error bars" if gains else ""
    if all(g.has_interval for g in gains):
        return "error bars: 2 se"
    return "error bars: 2 se; none where a cell has one seed"


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def gains_scatter(sens: list[Sensitivity], path: str | os.PathLike, demo: bool = False) -> AnyPath:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    points = [s for s in sens if s.resolution is not None and s.size is not None]
    if not points:
        _no_data(ax, "no task has both a resolution and a size gain yet")
    else:
        xs = [s.resolution.value for s in points]
        ys = [s.size.value for s in points]
        if any(g.has_interval for s in points for g in (s.resolution, s.size)):
            ax.errorbar(xs, ys, xerr=[2 * s.resolution.se for s in points], yerr=[2 * s.size.se for s in points],
                        fmt="o", capsize=3)
        else:
            ax.plot(xs, ys, "o")
        ends = [(g.value - 2 * g.se, g.value + 2 * g.se) for s in points for g in (s.resolution, s.size)]
        lo, hi = min(0.0, *(a for a, _ in ends)), max(0.0, *(b for _, b in ends))
        pad = 0.1 * (hi - lo) or 1.0
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, label="equal gains")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        _label_points(fig, ax, points, xs, ys)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("gain from the next resolution (points x100)")
    ax.set_ylabel("gain from the next model size (points x100)")
    note = _error_bar_note(points)
    title = "Resolution vs size sensitivity" + (f" ({note})" if note else "")
    size = plt.rcParams["axes.titlesize"]
    ax.set_title(_wrapped(fig, (DEMO_TAG if demo else "") + title, _points(size)))
    return _save(fig, path, title, demo)


def _label_points(fig, ax, points: list[Sensitivity], xs: list[float], ys: list[float]) -> None:
    """Writes "task (label)" beside each point without overprinting: tasks at the same point share one
    label, and each label takes the first spot (right or left of its point, above or below, then
    further down) inside the axes where it covers neither another label nor a point. Labels of points
    in the right 40% of the plot try the left side first."""
    x0, x1 = ax.get_xlim()
    right_of = x0 + 0.6 * (x1 - x0)
    groups: dict[tuple[float, float], list[Sensitivity]] = {}
    for s, x, y in zip(points, xs, ys):
        groups.setdefault((round(x, 6), round(y, 6)), []).append(s)
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in ax.transData.transform(list(groups))]
    for (x, y), group in sorted(groups.items(), key=lambda item: -item[0][1]):
        kinds = {s.label for s in group}
        text = (", ".join(s.task for s in group) + f" ({group[0].label})" if len(kinds) == 1
                else "; ".join(f"{s.task} ({s.label})" for s in group))
        sides = [(-6, "right"), (6, "left")] if x > right_of else [(6, "left"), (-6, "right")]
        spots = [(dx, dy, ha) for dy in (4, -12, -24, -36, -48) for dx, ha in sides]
        # A thin leader line ties a label that had to move away from its point back to it.
        label = ax.annotate(text, (x, y), xytext=spots[0][:2], textcoords="offset points", fontsize=8,
                            arrowprops=dict(arrowstyle="-", lw=0.5, color="grey", shrinkA=1, shrinkB=4))
        for dx, dy, ha in spots + spots[:1]:  # where no spot is free, the first one
            label.xyann = (dx, dy)
            label.set_ha(ha)
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the text alone, without the leader line
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in taken):
                break
        taken.append(box)


def lr_sweep_curves(sweep: pd.DataFrame, chosen: Mapping, path: str | os.PathLike, demo: bool = False) -> AnyPath:
    """`sweep`: the tidy sweep frame of results.tables (task, size, lr, metric, score, best)."""
    tasks = sorted(sweep["task"].unique())
    cols = min(3, max(1, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    if not tasks:
        _no_data(axes[0][0], "no sweep records")
    for ax, task in zip(axes.flat, tasks):
        part = sweep[sweep["task"] == task]
        for size, line in part.groupby("size", sort=False):
            line = line.sort_values("lr")
            ax.plot(line["lr"], line["score"], "o-", label=size)
            best = chosen.get((task, size))
            hit = line[line["lr"] == (best.lr if best is not None else math.nan)]
            ax.plot(hit["lr"], hit["score"], "*", color="k", markersize=12)
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"{part['metric'].iloc[0]} x100")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tasks):] if tasks else []:
        ax.set_axis_off()
    title = "Learning-rate sweep (star: the protocol's pick)"
    fig.suptitle(_wrapped(fig, (DEMO_TAG if demo else "") + title, _points(plt.rcParams["figure.titlesize"])))
    return _save(fig, path, title, demo)


def versus_bars(tidy: pd.DataFrame, baseline: str, path: str | os.PathLike, sizes: list[str],
                demo: bool = False) -> AnyPath:
    """Per task, one bar per size-resolution cell: score minus the baseline's (points x100); bars in
    the tables' column order (resolution, then `sizes` in family order)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if tidy.empty:
        _no_data(ax, "no cell in common with the baseline")
    else:
        tasks = sorted(tidy["task"].unique())
        cells = sorted({(s, r) for s, r in zip(tidy["size"], tidy["resolution"])},
                       key=lambda c: (c[1], sizes.index(c[0])))
        width = 0.8 / len(cells)
        for i, (size, res) in enumerate(cells):
            part = tidy[(tidy["size"] == size) & (tidy["resolution"] == res)].set_index("task")["diff"]
            xs = [t + (i - (len(cells) - 1) / 2) * width for t in range(len(tasks))]
            ax.bar(xs, [part.get(task, math.nan) for task in tasks], width, label=f"{size}-{res}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(tasks)), tasks, rotation=20, fontsize=8)
        ax.legend(fontsize=8, ncol=len(cells))
    ax.set_ylabel("score - baseline (points x100)")
    title = f"Against {baseline}"
    ax.set_title(_wrapped(fig, (DEMO_TAG if demo else "") + title, _points(plt.rcParams["axes.titlesize"])))
    return _save(fig, path, title, demo)
