"""What `paligemma-transfer tasks` prints: the plugins, their headline metric and their recipes."""

from __future__ import annotations

import dataclasses

from model.config import FAMILIES
from tasks.registry import available, get_task

RECIPE_COLUMNS = ("batch_size", "lr", "epochs", "steps", "weight_decay", "label_smoothing", "dropout",
                  "text_len", "decode", "beam_size", "max_decode_len", "freeze_img", "pad_to_square")


def task_rows() -> list[dict]:
    rows = []
    for name in sorted(available()):
        task = get_task(name)
        r = task.recipe("3b", 224)
        rows.append(dict(task=name, headline=task.headline, description=task.description,
                         default_recipe=f"bs {r.batch_size}, lr {r.lr:g}, "
                         + (f"{r.epochs:g} epochs" if r.epochs is not None else f"{r.steps} steps")
                         + f", {r.decode}" + (f" {r.beam_size}" if r.decode == "beam" else "")))
    return rows


def recipe_table(only: str | None = None) -> list[dict]:
    """One row per task x size x resolution of the paper family, every recipe field."""
    names = [only] if only else sorted(available())
    spec = FAMILIES["paligemma2"]
    rows = []
    for name in names:
        task = get_task(name)
        for size in spec["sizes"]:
            for res in spec["resolutions"]:
                recipe = dataclasses.asdict(task.recipe(size, res))
                rows.append(dict(task=name, size=size, resolution=res,
                                 **{k: recipe[k] for k in RECIPE_COLUMNS}))
    return rows
