"""Decode an eval split with the plugin's decode settings, parse, score, and keep every prediction.

Each prediction row is {"id": the dataset's own id, "prediction": raw model text, "parsed": task.parse(text)};
the rows are what `paligemma-transfer score` reads back, so a table can be rescored without a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from harness.cell.data import TextSpec, eval_batches
from harness.cell.train import progress_kwargs
from model.config import PaliGemmaConfig
from model.decode import generate
from results.store import atomic_write_text, jsonable
from tasks.base import Example, Recipe, Scores, Task


def predict(config: PaliGemmaConfig, params: Any, examples: Sequence[Example], tokenizer,
            recipe: Recipe, spec: TextSpec, *, batch_size: int, progress: bool | None = None,
            desc: str = "decode", mesh: Mesh | None = None) -> list[dict]:
    """Generate text for every example; returns prediction rows in example order.

    With `mesh`, decoding runs sharded on it (model/decode.py); every process of a multi-host job
    decodes the same batches and gets the same rows back."""
    rows: list[dict] = []
    beam = recipe.beam_size if recipe.decode == "beam" else 1
    total = -(-len(examples) // batch_size)
    for batch in tqdm(eval_batches(examples, tokenizer, spec, batch_size=batch_size), total=total,
                      desc=desc, leave=False, **progress_kwargs(progress), unit="batch", dynamic_ncols=True):
        a = batch.arrays
        out = generate(config, params, a["image"], a["text"], a["mask_ar"], a["mask_input"],
                       max_decode_len=recipe.max_decode_len, beam_size=beam, eos_id=tokenizer.eos_id,
                       mesh=mesh)
        for i, ex_id in enumerate(batch.ids):
            rows.append({"id": ex_id, "prediction": tokenizer.decode(np.asarray(out[i]).tolist())})
    return rows


def score_rows(task: Task, rows: Iterable[dict], references: dict[str, Any]) -> tuple[Scores, list[dict]]:
    """Parse raw predictions and score them against references (ids missing from rows score as misses)."""
    rows = list(rows)
    parsed = {}
    for row in rows:
        row["parsed"] = task.parse(row["prediction"])
        parsed[str(row["id"])] = row["parsed"]
    unknown = sorted(set(parsed) - set(references))
    if unknown:
        raise KeyError(f"{len(unknown)} prediction id(s) are not in the references, e.g. {unknown[:3]}")
    return task.score(parsed, references), rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Atomic JSONL write (results.store.atomic_write_text: temp file, fsync, rename, fsync the folder;
    one object write in a bucket)."""
    text = "".join(json.dumps(row, ensure_ascii=False, default=jsonable) + "\n" for row in rows)
    atomic_write_text(path, text)
