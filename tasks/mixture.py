"""Training on a weighted mixture of sources, as big_vision's mixtures (`config.input.data = {name: weight}`,
e.g. its ChartQA transfer weights the human and augmented sets by their sizes).

A plugin that trains on a mixture returns `MixtureSource`s from `train_mixture(manual_dir)`; the harness
makes each source's Example sequence (`source_examples`) and draws training examples with `draw`: a pure
function of (seed, index), O(1) per draw, so a resumed run draws exactly what the interrupted one would
have. `MixtureExamples` wraps both as one random-access sequence the data pipeline can index like a split.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.base import Example


@dataclass(frozen=True)
class MixtureSource:
    """One source of a training mixture: the plugin that reads it, its raw folder, its split role and its
    weight (None: its number of examples, so every example is equally likely, as mixing by size)."""

    task: str
    manual_dir: Path
    role: str = "train"
    weight: float | None = None


def _cumulative(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or not len(w) or (w < 0).any() or not math.isfinite(w.sum()) or w.sum() <= 0:
        raise ValueError(f"mixture weights must be non-negative, finite and not all 0, got {list(weights)}")
    return np.cumsum(w / w.sum())


def draw(index: int, *, seed: int, weights: Sequence[float], sizes: Sequence[int]) -> tuple[int, int]:
    """Training draw `index` -> (source, example index within it): the source with probability
    weight / sum(weights), then one of its examples uniformly. Seeded by (seed, index) alone."""
    if len(weights) != len(sizes) or any(n <= 0 for n in sizes):
        raise ValueError(f"one positive size per weight, got weights {list(weights)} and sizes {list(sizes)}")
    rng = np.random.default_rng([seed, index])
    u, v = rng.random(2)
    source = min(int(np.searchsorted(_cumulative(weights), u, side="right")), len(sizes) - 1)
    return source, int(v * sizes[source])


def source_examples(sources: Sequence[MixtureSource]) -> list[Sequence[Example]]:
    """Each source's Example sequence, through its plugin (tasks/registry.py)."""
    from tasks.registry import get_task

    return [get_task(s.task).examples(s.manual_dir, s.role) for s in sources]


class MixtureExamples(Sequence[Example]):
    """The mixture as one sequence: item i is draw(i)'s example. Its length is the sources' total, so a
    recipe in epochs counts passes over all of them."""

    def __init__(self, parts: Sequence[Sequence[Example]], weights: Sequence[float | None], seed: int = 0):
        self._parts = list(parts)
        self._sizes = [len(p) for p in self._parts]
        self._weights = [float(n) if w is None else float(w) for w, n in zip(weights, self._sizes)]
        self._seed = seed
        _cumulative(self._weights)

    @classmethod
    def of(cls, sources: Sequence[MixtureSource], seed: int = 0) -> MixtureExamples:
        return cls(source_examples(sources), [s.weight for s in sources], seed)

    def __len__(self) -> int:
        return sum(self._sizes)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        source, k = draw(int(index), seed=self._seed, weights=self._weights, sizes=self._sizes)
        return self._parts[source][k]

    def __iter__(self) -> Iterator[Example]:
        return (self[i] for i in range(len(self)))
