"""Is a task resolution-sensitive, size-sensitive, or both? (the paper's Fig. 3, facts §3.2 "Task grouping")

Per task, from the final-phase mean ± std over seeds of the headline metric (x100), with s1 < s2 the
two smallest sizes and r1 < r2 the two lowest resolutions present in the records:

    res gain  = score(s1, r2) - score(s1, r1)     going up one resolution at the smallest size
    size gain = score(s2, r1) - score(s1, r1)     going up one size at the lowest resolution

A gain is *significant* when it is positive and larger than twice its standard error
se = sqrt(sd_a^2 / n_a + sd_b^2 / n_b) (sample std over seeds of the two cells compared); a gain whose
size is at most 2 se is *within noise*; a negative one beyond 2 se is *a drop* (it counts as not
significant for the label, but it is not noise either). With a single seed in either cell there is no
noise estimate: the gain is shown with "1 seed", none is called significant, and the label is "1 seed".
Otherwise the label is
    - "resolution": only the resolution gain is significant, or both are and it is >= 2x the size gain;
    - "size":       only the size gain is significant, or both are and it is >= 2x the resolution gain;
    - "both":       both are significant and neither is twice the other;
    - "neither":    neither is significant;
    - "–":          a cell needed for either gain is missing;
    - "1 seed":     a cell has one seed, so there is no interval to judge a gain by.
The factor 2 is ours (the paper groups tasks by eye): it says one axis "mostly" explains the gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

RULE = ("A gain is significant when it is positive and exceeds 2 standard errors of the difference of the "
        "two seed means (sqrt(sd_a²/n_a + sd_b²/n_b)); a gain no larger than 2 se is marked *within noise*, "
        "a fall of more than 2 se *a drop*. With one seed there is no interval: gains say *1 seed* and the "
        "label is *1 seed*, whatever their size. Label: *resolution* if only the resolution gain is "
        "significant or both are and it is at least twice the size gain; *size* likewise; *both* if both "
        "are significant and neither is twice the other; *neither* if none is significant; – if a cell is "
        "missing.")
ONE_SEED = "1 seed"
DOMINANCE = 2.0
SIGNIFICANCE = 2.0


@dataclass(frozen=True)
class Gain:
    value: float  # points (x100)
    se: float  # standard error of the difference of the two means (0.0 without an interval)
    seeds: int = 2  # the fewer seeds of the two cells compared

    @property
    def has_interval(self) -> bool:
        """A noise estimate needs two seeds or more in both cells."""
        return self.seeds >= 2

    @property
    def significant(self) -> bool:
        return self.has_interval and self.value > 0 and self.value > SIGNIFICANCE * self.se

    @property
    def within_noise(self) -> bool:
        return self.has_interval and abs(self.value) <= SIGNIFICANCE * self.se

    @property
    def drop(self) -> bool:
        """A fall larger than its noise: shown as such, so that it is not read as a (bold-free) gain."""
        return self.has_interval and self.value < -SIGNIFICANCE * self.se


@dataclass(frozen=True)
class Sensitivity:
    task: str
    metric: str
    base: float | None  # score(s1, r1): mean over seeds
    base_std: float | None  # its sample std over seeds (None with one seed)
    resolution: Gain | None
    size: Gain | None

    @property
    def label(self) -> str:
        if self.resolution is None or self.size is None:
            return "–"
        res, size = self.resolution, self.size
        if not (res.has_interval and size.has_interval):
            return ONE_SEED
        if res.significant and size.significant:
            if res.value >= DOMINANCE * size.value:
                return "resolution"
            if size.value >= DOMINANCE * res.value:
                return "size"
            return "both"
        if res.significant:
            return "resolution"
        if size.significant:
            return "size"
        return "neither"


def _gain(cells: pd.DataFrame, a: tuple, b: tuple) -> Gain | None:
    if a not in cells.index or b not in cells.index:
        return None
    ca, cb = cells.loc[a], cells.loc[b]
    seeds = int(min(ca["n"], cb["n"]))
    if seeds < 2:
        return Gain(value=cb["mean"] - ca["mean"], se=0.0, seeds=seeds)
    var = sum(c["std"] ** 2 / c["n"] if not math.isnan(c["std"]) else 0.0 for c in (ca, cb))
    return Gain(value=cb["mean"] - ca["mean"], se=math.sqrt(var), seeds=seeds)


def sensitivities(cells: pd.DataFrame, sizes: list[str], resolutions: list[int]) -> list[Sensitivity]:
    """`cells`: mean, std, n, metric indexed by (task, size, resolution); sizes/resolutions in order."""
    out = []
    s1, r1 = (sizes[0] if sizes else None), (resolutions[0] if resolutions else None)
    s2 = sizes[1] if len(sizes) > 1 else None
    r2 = resolutions[1] if len(resolutions) > 1 else None
    for task in sorted(cells.index.get_level_values(0).unique()):
        base = (task, s1, r1)
        std = (float(cells.loc[base, "std"]) if base in cells.index and cells.loc[base, "n"] > 1
               and not math.isnan(cells.loc[base, "std"]) else None)
        out.append(Sensitivity(
            task=task, metric=str(cells.xs(task, level=0)["metric"].iloc[0]),
            base=float(cells.loc[base, "mean"]) if base in cells.index else None, base_std=std,
            resolution=_gain(cells, base, (task, s1, r2)) if r2 is not None else None,
            size=_gain(cells, base, (task, s2, r1)) if s2 is not None else None))
    return out
