"""Where the paper tunes each task's lr, in the terms of any model family.

The paper sweeps the classic tasks at 224 px and reuses the pick at 448 px (§4.1); the tasks new in
PaliGemma 2 are tuned at the resolution they are reported at (App. B): text spotting and tables at 896 px,
molecules at 448 px, and MIMIC-CXR re-swept at every size and resolution. A plugin names the paper's
resolution; `family_resolution` turns it into the resolution of the family a recipe is asked for, so the
nano family (32 / 64 / 128 px standing for 224 / 448 / 896) keeps the same policy point by point.
"""

from __future__ import annotations

from model.config import FAMILIES

PAPER_FAMILY = "paligemma2"


def family_resolution(paper_resolution: int, resolution: int) -> int:
    """The resolution of `resolution`'s family that stands where `paper_resolution` stands in the paper's.

    Raises KeyError naming the resolutions when either is in no family."""
    paper = FAMILIES[PAPER_FAMILY]["resolutions"]
    if paper_resolution not in paper:
        raise KeyError(f"paper resolution {paper_resolution} is not one of {list(paper)}")
    for spec in FAMILIES.values():
        if resolution in spec["resolutions"]:
            return spec["resolutions"][paper.index(paper_resolution)]
    known = sorted(r for spec in FAMILIES.values() for r in spec["resolutions"])
    raise KeyError(f"resolution {resolution} is in no model family; known: {known}")
