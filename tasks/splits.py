"""Split expressions of the paper's roles resolved against the prepared split sizes.

TFDS refuses absolute bounds past a split's end and rounds small percentages to empty slices, so roles
such as big_vision's "validation[-10240:]" or "train[-5%:]" break on demo-sized data. `resolve_split`
turns an expression into absolute slices with rules that leave real-sized data exactly as TFDS slices it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tasks.errors import DataError

_SPLIT_TERM = re.compile(r"^\s*(\w+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


def resolve_split(expression: str, sizes: Mapping[str, int]) -> str:
    """A TFDS split expression ("train + validation[:-10240]", "train[-5%:]") -> absolute slices.

    TFDS refuses absolute bounds past a split's end and rounds small percentages to empty slices, so the
    paper's roles break on demo-sized data. Resolved here instead, with two rules that leave real data
    unchanged: absolute bounds are clipped the way Python slices are ("validation[-10240:]" of a 40-question
    split is all 40, "validation[:-10240]" is empty and dropped from the sum), and a percentage cut of a
    split with at least 2 examples leaves at least one example on each side (5% of 39,463 is 1,973 as TFDS
    rounds it; 5% of 6 is 1, not 0).
    """
    terms = []
    for raw in expression.split("+"):
        match = _SPLIT_TERM.match(raw)
        if not match:
            raise ValueError(f"unsupported split expression {expression!r} (term {raw.strip()!r})")
        name, start, stop = match.groups()
        if name not in sizes:
            raise DataError(f"split {name!r} (in {expression!r}) was not prepared: its raw files are missing "
                            f"from the manual directory; prepared splits: {sorted(sizes)}")
        n = sizes[name]
        lo, hi, _ = slice(_bound(start, n), _bound(stop, n)).indices(n)
        if hi > lo:
            terms.append(f"{name}[{lo}:{hi}]")
    if not terms:
        raise DataError(f"split expression {expression!r} selects no examples (split sizes: {dict(sizes)})")
    return "+".join(terms)


def _bound(value: str | None, n: int) -> int | None:
    if value is None:
        return None
    if not value.endswith("%"):
        return int(value)
    pct = int(value[:-1])
    k = round(n * abs(pct) / 100)
    if n >= 2 and 0 < abs(pct) < 100:
        k = min(max(k, 1), n - 1)
    return k if pct >= 0 else n - k


def split_names(expression: str) -> set[str]:
    """The prepared splits an expression reads ("train[:-5%] + val" -> {"train", "val"})."""
    names = set()
    for raw in expression.split("+"):
        match = _SPLIT_TERM.match(raw)
        if not match:
            raise ValueError(f"unsupported split expression {expression!r} (term {raw.strip()!r})")
        names.add(match.group(1))
    return names
