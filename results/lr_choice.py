"""The protocol's learning-rate pick (paper §4.1): from sweep records, the best lr per (task, size).

One rule in one place: the scheduler uses it to choose the lr of the final runs, and the tables use it
to bold the same choice when they are regenerated from the records alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LrChoice:
    """The protocol's pick for one (task, size), with the sweep it was picked from."""

    task: str
    size: str
    lr: float
    headline: str
    scores: tuple[tuple[float, float | None], ...]  # (lr, mean headline metric) in lr order


def select_best_lrs(records: Iterable[Any]) -> dict[tuple[str, str], LrChoice]:
    """Best lr per (task, size) from sweep records (anything with task/size/lr/phase/headline/metrics).

    Higher headline is better; a tie goes to the smaller lr; a missing or NaN metric never wins.
    Several records of one lr (e.g. seeds) are averaged.
    """
    by_pair: dict[tuple[str, str], dict[float, list[float]]] = {}
    headlines: dict[tuple[str, str], str] = {}
    for r in records:
        if r.phase != "sweep":
            continue
        value = r.metrics.get(r.headline)
        bucket = by_pair.setdefault((r.task, r.size), {}).setdefault(float(r.lr), [])
        if value is not None and not math.isnan(float(value)):
            bucket.append(float(value))
        headlines[r.task, r.size] = r.headline
    choices = {}
    for pair, per_lr in by_pair.items():
        scores = tuple((lr, sum(v) / len(v) if v else None) for lr, v in sorted(per_lr.items()))
        # max over (score, -lr): the higher score wins, and among equal scores the smaller lr.
        best = max(scores, key=lambda s: (-math.inf if s[1] is None else s[1], -s[0]))
        choices[pair] = LrChoice(pair[0], pair[1], best[0], headlines[pair], scores)
    return choices


def format_lr(lr: float) -> str:
    """3e-04 style, with more digits only when one digit would not round-trip."""
    text = f"{lr:.0e}"
    return text if float(text) == lr else f"{lr:.3e}"
