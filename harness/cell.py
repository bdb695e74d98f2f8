"""One grid cell end to end: base checkpoint + task train split -> fine-tuned params -> decode -> score.

This is the default runner the scheduler calls (`runner(cell, cell_dir) -> dict`). It resumes from the
checkpoints it left in `cell_dir`, and writes `cell_dir/predictions.jsonl` for the scheduler to publish.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from harness.data import TextSpec, train_batches
from harness.evaluate import predict, score_rows, write_jsonl
from harness.train import TrainConfig, train
from model import checkpoint
from model.config import PaliGemmaConfig, config_for
from model.paligemma import init_params
from model.tokenizer import Tokenizer
from tasks.base import Recipe
from tasks.registry import get_task

NANO_TOKENIZER = Path(__file__).resolve().parent.parent / "model" / "assets" / "nano_tokenizer.model"

# Override keys the harness itself reads; every other override must be a Recipe field.
HARNESS_KEYS = {"tokenizer", "eval_batch_size", "checkpoint_every", "compute_dtype", "remat",
                "max_eval_examples", "param_dtype", "loss_impl", "remat_img", "remat_llm"}
# Trainer options passed through as they are (harness/train.py TrainConfig; docs/efficiency.md).
EFFICIENCY_KEYS = ("param_dtype", "loss_impl", "remat_img", "remat_llm")


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    """(recipe overrides, harness options), with an error naming an unknown key."""
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(overrides) - recipe_fields - HARNESS_KEYS
    if unknown:
        raise KeyError(f"unknown override(s) {sorted(unknown)}; expected Recipe fields "
                       f"{sorted(recipe_fields)} or harness options {sorted(HARNESS_KEYS)}")
    recipe = {k: v for k, v in overrides.items() if k in recipe_fields}
    if "steps" in recipe:
        recipe.setdefault("epochs", None)
    if "epochs" in recipe and recipe["epochs"] is not None:
        recipe.setdefault("steps", None)
    return recipe, {k: v for k, v in overrides.items() if k in HARNESS_KEYS}


def transfer_config(config: PaliGemmaConfig, recipe: Recipe) -> PaliGemmaConfig:
    """Apply the recipe's soft-cap policy (see tasks/base.py Recipe) to the family config."""
    return config.with_llm(
        final_logits_softcap=config.llm.final_logits_softcap if recipe.final_logits_softcap else None,
        attn_logits_softcap=config.llm.attn_logits_softcap if recipe.attn_logits_softcap else None)


def tokenizer_for(config: PaliGemmaConfig, options: Mapping[str, Any]) -> Tokenizer:
    path = options.get("tokenizer")
    if path is None:
        if config.family != "nano":
            raise FileNotFoundError(
                f"{config.name} needs the Gemma tokenizer: set overrides.tokenizer to the path of "
                "paligemma_tokenizer.model (or gemma_tokenizer.model) in the grid file")
        path = NANO_TOKENIZER
    if not Path(path).is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    return Tokenizer(str(path))


def base_params(config: PaliGemmaConfig, checkpoint_path: str, seed: int) -> Any:
    """Random init, or a checkpoint's params in float32 (released ones are bfloat16; the trainer keeps
    float32 master weights whatever the compute dtype)."""
    if checkpoint_path == "random":
        return init_params(config, jax.random.key(seed))
    _, params = checkpoint.load(checkpoint_path, config_name=config.name, dtype=np.float32)
    return params


def run_cell(cell: Any, cell_dir: Path, *, progress: bool | None = None) -> dict:
    task = get_task(cell.task)
    recipe_overrides, options = split_overrides(dict(cell.overrides))
    recipe = task.recipe(cell.size, cell.resolution).replace(lr=cell.lr, **recipe_overrides)
    config = transfer_config(config_for(cell.size, cell.resolution), recipe)
    tokenizer = tokenizer_for(config, options)
    spec = TextSpec(text_len=recipe.text_len, square_pad=recipe.pad_to_square,
                    resolution=cell.resolution)

    train_examples = task.examples(cell.data_dir, "train")
    num_steps = recipe.num_steps(len(train_examples))
    cfg = TrainConfig(
        lr=recipe.lr, num_steps=num_steps, weight_decay=recipe.weight_decay,
        label_smoothing=recipe.label_smoothing, dropout=recipe.dropout,
        freeze_img=recipe.freeze_img, freeze_llm=recipe.freeze_llm,
        compute_dtype=options.get("compute_dtype", "float32"), remat=options.get("remat", False),
        **{k: options[k] for k in EFFICIENCY_KEYS if k in options},
        checkpoint_every=options.get("checkpoint_every", max(1, num_steps // 4)), seed=cell.seed)
    batches = train_batches(train_examples, tokenizer, spec, batch_size=recipe.batch_size,
                            num_steps=num_steps, seed=cell.seed)
    params = base_params(config, cell.checkpoint, cell.seed)
    params, summary = train(config, params, batches, cfg, workdir=cell_dir, progress=progress,
                            desc=f"train {cell.cell_id}")

    eval_examples = task.examples(cell.data_dir, cell.split)
    limit = options.get("max_eval_examples")
    if limit is not None:
        eval_examples = [eval_examples[i] for i in range(min(limit, len(eval_examples)))]
    rows = predict(config, params, eval_examples, tokenizer, recipe, spec,
                   batch_size=options.get("eval_batch_size", recipe.batch_size), progress=progress,
                   desc=f"decode {cell.cell_id}")
    references = {ex.id: ex.reference for ex in eval_examples}
    scores, rows = score_rows(task, rows, references)
    write_jsonl(Path(cell_dir) / "predictions.jsonl", rows)
    return {"metrics": scores.metrics, "headline": task.headline, "steps": summary["steps"],
            "num_eval_examples": scores.num_examples, "num_unparsable": scores.num_unparsable,
            "train": summary}
