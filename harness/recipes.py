"""A cell's effective recipe: the plugin's recipe for (size, resolution), the cell's lr, the grid's overrides.

Shared by the grid (which hashes the effective recipe into the cell id and checks override keys when the
file is loaded) and the runner (which trains with it), so both see the same recipe. Imports no JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.base import Recipe

NANO_TOKENIZER = Path(__file__).resolve().parent.parent / "model" / "assets" / "nano_tokenizer.model"

# Override keys the harness itself reads; every other override must be a Recipe field.
HARNESS_KEYS = {"tokenizer", "eval_batch_size", "checkpoint_every", "compute_dtype", "remat",
                "max_eval_examples", "param_dtype", "loss_impl", "remat_img", "remat_llm"}
# Trainer options passed through as they are (harness/train.py TrainConfig; docs/efficiency.md).
EFFICIENCY_KEYS = ("param_dtype", "loss_impl", "remat_img", "remat_llm")


def recipe_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(Recipe)}


def unknown_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """Override keys that are neither Recipe fields nor harness options, sorted."""
    return sorted(set(overrides) - recipe_fields() - HARNESS_KEYS)


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    """(recipe overrides, harness options), with an error naming an unknown key."""
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


def effective_recipe(task: Any, size: str, resolution: int, lr: float,
                     overrides: Mapping[str, Any]) -> Recipe:
    """The recipe a cell trains with (raises KeyError for an unknown override key)."""
    recipe_overrides, _ = split_overrides(overrides)
    return task.recipe(size, resolution).replace(lr=lr, **recipe_overrides)


def tokenizer_path(size: str, overrides: Mapping[str, Any]) -> str | None:
    """The tokenizer file a cell uses: overrides.tokenizer, the shipped nano one, or None (missing)."""
    from model.config import family_of

    if overrides.get("tokenizer") is not None:
        return str(overrides["tokenizer"])
    return str(NANO_TOKENIZER) if family_of(size) == "nano" else None
