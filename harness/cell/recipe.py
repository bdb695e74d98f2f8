"""A cell's effective recipe and run options: the one function every reader of a cell's recipe calls.

`effective(task, size, resolution, lr, overrides)` is the plugin's recipe for (size, resolution), the cell's
lr and the grid's overrides, with the harness options (tokenizer, compute dtype, remat, ...) beside it. The
cell id (harness/run/grid.py), the memory check (harness/run/placement.py), the dry run's steps and FLOPs
(harness/run/plan.py) and the run itself (harness/cell/run_cell.py) all call it, so an edit to a recipe
or to the steps/epochs rule reaches all four at once. Imports no JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from model.config import PaliGemmaConfig, config_for
from tasks.base import Recipe

NANO_TOKENIZER = Path(__file__).resolve().parents[2] / "model" / "assets" / "nano_tokenizer.model"

# Override keys the harness itself reads; every other override must be a Recipe field.
HARNESS_KEYS = {"tokenizer", "eval_batch_size", "checkpoint_every", "compute_dtype", "remat",
                "max_eval_examples", "param_dtype", "loss_impl", "remat_img", "remat_llm", "data_workers"}
# Harness options that change how fast a cell runs, never its numbers, so they are left out of its
# identity: `data_workers`, the input pipeline's worker processes per host (default
# harness/cell/data.default_workers; the batches are the same for any number).
RUN_ONLY_KEYS = frozenset({"data_workers"})
# Trainer options passed through as they are (harness/cell/train.py TrainConfig; docs/efficiency.md).
EFFICIENCY_KEYS = ("param_dtype", "loss_impl", "remat_img", "remat_llm")

AUTO_MESH = "auto"
# A mesh request: None (no `mesh:`; as "auto"), "auto" (the memory plan picks model_parallel), or a dict
# of mesh axes, e.g. {"model_parallel": 4}. Resolved per cell at run time against the devices the run has
# (harness/cell/mesh.py).
MeshRequest = str | dict[str, int] | None


def recipe_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(Recipe)}


def unknown_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """Override keys that are neither Recipe fields nor harness options, sorted."""
    return sorted(set(overrides) - recipe_fields() - HARNESS_KEYS)


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    """(recipe overrides, harness options), with an error naming an unknown key.

    An override of `steps` clears the recipe's `epochs` and vice versa: a recipe sets exactly one."""
    fields = recipe_fields()
    unknown = unknown_overrides(overrides)
    if unknown:
        raise KeyError(f"unknown override(s) {unknown}; expected Recipe fields "
                       f"{sorted(fields)} or harness options {sorted(HARNESS_KEYS)}")
    recipe = {k: v for k, v in overrides.items() if k in fields}
    if "steps" in recipe:
        recipe.setdefault("epochs", None)
    if "epochs" in recipe and recipe["epochs"] is not None:
        recipe.setdefault("steps", None)
    return recipe, {k: v for k, v in overrides.items() if k in HARNESS_KEYS}


def transfer_config(config: PaliGemmaConfig, recipe: Recipe) -> PaliGemmaConfig:
    """Apply the recipe's soft-cap policy (tasks/base.py Recipe) to the family config."""
    return config.with_llm(
        final_logits_softcap=config.llm.final_logits_softcap if recipe.final_logits_softcap else None,
        attn_logits_softcap=config.llm.attn_logits_softcap if recipe.attn_logits_softcap else None)


@dataclass(frozen=True)
class Effective:
    """What one cell trains and decodes with: its recipe, its harness options and its model config."""

    recipe: Recipe
    options: Mapping[str, Any]
    size: str
    resolution: int

    @property
    def model_config(self) -> PaliGemmaConfig:
        return transfer_config(config_for(self.size, self.resolution), self.recipe)

    @property
    def compute_dtype(self) -> str:
        return str(self.options.get("compute_dtype", "float32"))

    @property
    def remat(self) -> bool:
        return bool(self.options.get("remat", False))

    def num_steps(self, train_size: int | None) -> int | None:
        """Training steps: the recipe's `steps`, or its epochs over `train_size` examples (None when an
        epoch recipe's data size is unknown, as in a dry run before preparation)."""
        if self.recipe.steps is None and train_size is None:
            return None
        return self.recipe.num_steps(int(train_size or 0))

    def checkpoint_every(self, num_steps: int) -> int:
        return int(self.options.get("checkpoint_every", max(1, num_steps // 4)))

    def efficiency(self) -> dict[str, Any]:
        return {k: self.options[k] for k in EFFICIENCY_KEYS if k in self.options}


def effective(task: Any, size: str, resolution: int, lr: float, overrides: Mapping[str, Any]) -> Effective:
    """The effective recipe of a cell (`task`: a plugin or its registered name). Raises KeyError for an
    unknown override key, TypeError/ValueError for a combination the Recipe refuses."""
    if isinstance(task, str):
        from tasks.registry import get_task

        task = get_task(task)
    recipe_overrides, options = split_overrides(dict(overrides))
    recipe = task.recipe(size, resolution).replace(lr=lr, **recipe_overrides)
    return Effective(recipe=recipe, options=MappingProxyType(dict(options)), size=size, resolution=resolution)


def tokenizer_path(size: str, overrides: Mapping[str, Any]) -> str | None:
    """The tokenizer file a cell uses: overrides.tokenizer, the shipped nano one, or None (missing)."""
    from model.config import family_of

    if overrides.get("tokenizer") is not None:
        return str(overrides["tokenizer"])
    return str(NANO_TOKENIZER) if family_of(size) == "nano" else None
