"""One grid cell end to end: base checkpoint + task train split -> fine-tuned params -> decode -> score.

This is the default runner the scheduler calls (`runner(cell, cell_dir) -> dict`). It resumes from the
checkpoints it left in `cell_dir`, and writes `cell_dir/predictions.jsonl` for the scheduler to publish.
`cell_dir` is a local folder or a folder in a bucket (gs://...): its files go through results/paths.py,
its checkpoints through orbax and etils.epath (harness/cell/checkpoints.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from harness.cell import hosts
from harness.cell.checkpoints import SHARDED_PARAMS, as_path, quiet_libraries
from harness.cell.data import TextSpec, default_workers, train_batches, training_examples
from harness.cell.evaluate import predict, score_rows, write_jsonl
from harness.cell.experiment_log import DEFAULT as DEFAULT_LOGS
from harness.cell.experiment_log import open_log
from harness.cell.memory_check import check_cell
from harness.cell.mesh import resolve_mesh
from harness.cell.recipe import NANO_TOKENIZER, effective
from harness.cell.train import TrainConfig, train
from model import checkpoint, hub, sharding
from model.config import PaliGemmaConfig
from model.paligemma import init_params
from model.tokenizer import Tokenizer
from results.paths import as_path as workdir_path
from results.paths import local_file
from tasks.registry import get_task

T = TypeVar("T")


def tokenizer_for(config: PaliGemmaConfig, options: Mapping[str, Any], checkpoint_path: str = "") -> Tokenizer:
    """overrides.tokenizer, else the tokenizer.model of an hf:// checkpoint's repository, else (nano only)
    the nano tokenizer shipped in model/assets."""
    path = options.get("tokenizer")
    if path is None and hub.is_hub_id(checkpoint_path):
        path = hub.tokenizer_file(checkpoint_path)
    if path is None:
        if config.family != "nano":
            raise FileNotFoundError(
                f"{config.name} needs the Gemma tokenizer: set overrides.tokenizer to the path of "
                "paligemma_tokenizer.model (or gemma_tokenizer.model) in the grid file")
        path = NANO_TOKENIZER
    if not Path(path).is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    return Tokenizer(str(path))


def check_base_checkpoint(cell: Any) -> None:
    """The base checkpoint is still the one the cell's id names (its content fingerprint, harness/cell/
    fingerprint.py): a file replaced after the grid was loaded would otherwise train under the old id."""
    import json

    from harness.cell.fingerprint import MISSING, fingerprint

    named = dict(getattr(cell, "identity", ()) or ()).get("checkpoint_sha256")
    expected = json.loads(named) if named is not None else MISSING
    if expected == MISSING:
        return
    found = fingerprint(cell.checkpoint)
    if found != expected:
        raise ValueError(f"{cell.cell_id}: base checkpoint {cell.checkpoint} is not the one this cell's id names "
                         f"(sha256 {found[:12]}, expected {expected[:12]}); run the grid again: its cells get "
                         "new ids")


def base_params(config: PaliGemmaConfig, checkpoint_path: str, seed: int, mesh=None) -> Any:
    """Random init, or a checkpoint's params in float32 (released ones are bfloat16; the trainer keeps
    float32 master weights whatever the compute dtype). With `mesh`, a random init is created already
    sharded (no device holds the whole model); jax's partitionable threefry gives the same values on
    any mesh."""
    if checkpoint_path == "random":
        if mesh is None:
            return init_params(config, jax.random.key(seed))
        shapes = jax.eval_shape(lambda k: init_params(config, k), jax.random.key(seed))
        return jax.jit(lambda k: init_params(config, k),
                       out_shardings=sharding.param_shardings(shapes, mesh))(jax.random.key(seed))
    directory = hub.resolve(checkpoint_path) if hub.is_hub_id(checkpoint_path) else checkpoint_path
    if mesh is not None:
        # Each process reads only the slices its devices hold: a 28B checkpoint is never whole on a host.
        shapes = jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0))
        return checkpoint.load_sharded(directory, config, sharding.param_shardings(shapes, mesh), np.float32)
    if os.path.isdir(directory):
        # A transformers directory carries its own config.json; the cell's config decides the semantics
        # (soft-caps, sliding window), so only the shapes must agree.
        _, params = checkpoint.load(directory, dtype=np.float32)
        checkpoint.check_against(checkpoint.flatten(params), config, checkpoint_path)
        return params
    _, params = checkpoint.load(checkpoint_path, config_name=config.name, dtype=np.float32)
    return params


def prepared_once(read: Callable[[], T], what: str) -> T:
    """`read()` (a split's examples, prepared into the shared cache on first use). In a multi-host job
    process 0 prepares while the others wait, then they read what it wrote: no two hosts write the same
    prepared files at once."""
    if jax.process_count() == 1:
        return read()
    if jax.process_index() == 0:
        examples = read()
        hosts.barrier(f"prepared {what}")
        return examples
    hosts.barrier(f"prepared {what}")
    return read()


def keep_params(params: Any, cell_dir: str | os.PathLike) -> None:
    """The fine-tuned params (grid `keep_checkpoints: params | all`): params.npz from one process, or, on
    a mesh spanning several processes, the orbax folder SHARDED_PARAMS into which each process writes its
    own shards (gathering them would put the whole model, 62 GB in one leaf at 28B, on every host);
    model.checkpoint.restore_orbax reads it back. np.savez writes local files, so a cell folder in a
    bucket gets params.npz through a local temp file."""
    if jax.process_count() == 1:
        with local_file(workdir_path(cell_dir) / "params.npz") as path:
            checkpoint.save_npz(str(path), params)
        return
    import orbax.checkpoint as ocp

    target = as_path(cell_dir) / SHARDED_PARAMS
    with quiet_libraries():
        if jax.process_index() == 0 and target.exists():  # left by an attempt killed after writing it
            target.rmtree()
        hosts.barrier(f"keep params {cell_dir}")
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(target, params)
        checkpointer.wait_until_finished()


def run_cell(cell: Any, cell_dir: Path, *, progress: bool | None = None) -> dict:
    task = get_task(cell.task)
    eff = effective(task, cell.size, cell.resolution, cell.lr, dict(cell.overrides))
    recipe, options, config = eff.recipe, eff.options, eff.model_config
    tokenizer = tokenizer_for(config, options, cell.checkpoint)
    spec = TextSpec(text_len=recipe.text_len, square_pad=recipe.pad_to_square,
                    resolution=cell.resolution, antialias=recipe.antialias)

    cache = getattr(cell, "data_cache", "") or None  # the scheduler sets it to WORKDIR/prepared
    # An eval-only cell (grid `train: false`) scores the base checkpoint as it is: no train split needed.
    trains = bool(getattr(cell, "train", True))
    train_examples = prepared_once(lambda: training_examples(task, cell.data_dir, cache_dir=cache, seed=cell.seed),
                                   f"{cell.cell_id} train") if trains else []
    num_steps = eff.num_steps(len(train_examples)) if trains else 0
    cfg = TrainConfig(
        lr=recipe.lr, num_steps=num_steps, weight_decay=recipe.weight_decay,
        label_smoothing=recipe.label_smoothing, dropout=recipe.dropout,
        freeze_img=recipe.freeze_img, freeze_llm=recipe.freeze_llm,
        compute_dtype=eff.compute_dtype, remat=eff.remat, **eff.efficiency(),
        checkpoint_every=eff.checkpoint_every(num_steps), seed=cell.seed)
    mesh = resolve_mesh(getattr(cell, "mesh", None), config, text_len=recipe.text_len,
                        batch_size=recipe.batch_size, remat=cfg.remat, compute_dtype=cfg.compute_dtype)
    # Each process of a multi-host job loads only its rows of every global batch.
    rows = sharding.process_rows(sharding.batch_sharding(mesh), recipe.batch_size)
    # Task.train_image (ChemDraw redraws its molecules): seeded by (cell seed, step, row), so resume is exact.
    batches = train_batches(train_examples, tokenizer, spec, batch_size=recipe.batch_size,
                            num_steps=num_steps, seed=cell.seed, rows=rows,
                            train_image=getattr(task, "train_image", None)) if trains else None
    check_base_checkpoint(cell)
    params = base_params(config, cell.checkpoint, cell.seed, mesh)
    # Closed after the eval (a cell that raises leaves them to exit; a resume appends). `logging` and
    # `config()` are optional: a cell need only have the fields run_cell reads. Only process 0 logs.
    metrics_log = open_log(getattr(cell, "logging", DEFAULT_LOGS) if jax.process_index() == 0 else (),
                           cell_dir, run_name=cell.cell_id,
                           config=cell.config() if callable(getattr(cell, "config", None)) else {})
    if trains:
        params, summary = train(config, params, batches, cfg, workdir=cell_dir, progress=progress,
                                desc=f"train {cell.cell_id}", metrics_log=metrics_log, mesh=mesh,
                                data_workers=options.get("data_workers", default_workers()))
    else:
        summary = {"steps": 0, "trained": False}
    if getattr(cell, "keep_checkpoints", "none") in ("params", "all"):
        keep_params(params, cell_dir)

    eval_examples = prepared_once(lambda: task.examples(cell.data_dir, cell.split, cache_dir=cache),
                                  f"{cell.cell_id} {cell.split}")
    limit = options.get("max_eval_examples")
    if limit is not None:
        eval_examples = [eval_examples[i] for i in range(min(limit, len(eval_examples)))]
    rows = predict(config, params, eval_examples, tokenizer, recipe, spec,
                   batch_size=options.get("eval_batch_size", recipe.batch_size), progress=progress,
                   desc=f"decode {cell.cell_id}", mesh=mesh)
    common = {"headline": task.headline, "steps": summary["steps"], "train": summary,
              "mesh": sharding.mesh_info(mesh), "softcap_policy": recipe.softcap_policy}
    submission = submission_writer(task, cell.split)
    if submission is not None:  # no public answers: the test server scores it
        metrics_log.close()
        if jax.process_index() == 0:
            write_jsonl(workdir_path(cell_dir) / "predictions.jsonl", rows)
            with local_file(workdir_path(cell_dir) / SUBMISSION_FILE) as path:  # the task writes a local file
                submission(path, {r["id"]: r["prediction"] for r in rows}, [ex.id for ex in eval_examples])
        return {"metrics": {}, **common, "num_eval_examples": len(rows), "scored": False,
                "submission": SUBMISSION_FILE}
    references = {ex.id: ex.reference for ex in eval_examples}
    scores, rows = score_rows(task, rows, references)
    metrics_log.scalars(summary["steps"], {f"eval/{k}": v for k, v in scores.metrics.items()})
    metrics_log.close()
    if jax.process_index() == 0:  # every process decoded the same rows; one writes them
        write_jsonl(workdir_path(cell_dir) / "predictions.jsonl", rows)
    return {"metrics": scores.metrics, **common, "num_eval_examples": scores.num_examples,
            "num_unparsable": scores.num_unparsable}


SUBMISSION_FILE = "submission.json"  # cells/<id>/: the test-server file of a split without public answers


def submission_writer(task: Any, role: str) -> Any:
    """The writer of the task's test-server file (tasks/submission.py) when the split `role` reads has no
    public answers (VQAv2 test, DocVQA test, COCO test), else None."""
    from tasks.splits import split_names
    from tasks.submission import UNSCORED_SPLITS, WRITERS

    unscored = UNSCORED_SPLITS.get(task.name, ())
    if task.name not in WRITERS or not unscored or role not in task.splits:
        return None
    return WRITERS[task.name] if split_names(task.split_name(role)) & set(unscored) else None


# The scheduler calls a runner's `check(cell)` before running it (harness/run/scheduler.py); the default
# runner's is its memory plan against the devices present.
run_cell.check = check_cell
