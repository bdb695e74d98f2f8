"""Fine-tuning with big_vision's transfer semantics (docs/paligemma2-facts.md §0.9, §0.10, §1.8).

Optimizer: global-norm clip 1.0 -> scale_by_adam(b2=0.999) -> x lr -> + wd * param on `kernel` params only
(decoupled, NOT multiplied by lr) -> x schedule(t) (5% linear warmup, cosine to 0) -> x -1. Frozen groups
(`img`, `llm`) get zero updates and stay out of the clip norm, as big_vision's per-subtree `None` schedule.
Loss: next-token cross-entropy on suffix tokens, averaged per example, then over the batch; label smoothing
puts 1 - ls on the target and ls / (V - 1) on every other class.

The run is resumable: orbax checkpoints (params, optimizer state, step) every `checkpoint_every` steps, and
the data pipeline is indexed by step (harness/cell/data.py), so a killed run continues where it stopped.

Sharding (docs/scale.md): params and optimizer state live on a (data, model) mesh as model/sharding.py's
rules say, each batch is split over 'data', and the step is jitted with those shardings as its in/out
shardings. The default mesh is one device, so the single-device run is the same code on a 1x1 mesh; a
checkpoint restores onto whatever mesh the resumed run has.
"""

from __future__ import annotations

import csv
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from harness.cell.checkpoints import Checkpoints, as_path, open_checkpoints
from harness.cell.data import host_batches
from model import sharding
from model.config import PaliGemmaConfig
from model.losses import chunked_token_losses, default_chunk, masked_mean, token_losses
from model.paligemma import PaliGemma
from model.siglip import normalize_images
from results import paths as workdir_paths


@dataclass(frozen=True)
class TrainConfig:
    lr: float
    num_steps: int
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    warmup_fraction: float = 0.05
    grad_clip_norm: float = 1.0
    b2: float = 0.999
    freeze_img: bool = False
    freeze_llm: bool = False
    # The image tower without its projector `img/head` (a pretraining stage that keeps a pretrained encoder
    # while the projector learns to feed the language model; freeze_img freezes both, as big_vision's 'img/.*').
    freeze_img_tower: bool = False
    # The image tower's updates (Adam step and weight decay alike) scaled by this fraction, i.e. its lr as a
    # fraction of `lr` with its decay scaled too (its projector `img/head` keeps `lr`). PaliGemma trains the
    # encoder in every stage but protects it from the early, unaligned LLM's gradients with a slow warmup
    # (docs/paligemma2-facts.md §1.4); a smaller tower lr is the same protection over a whole stage. 1.0:
    # the optimizer is exactly the one without this option.
    img_tower_lr_mult: float = 1.0
    compute_dtype: str = "float32"  # or "bfloat16" (params stay float32)
    remat: bool = False
    # "dense" materialises float32 logits for all positions; "chunked" (model/losses.py) a chunk of
    # positions at a time; "auto" chunks when the dense logits would exceed AUTO_CHUNK_VALUES values.
    loss_impl: str = "auto"
    # Per-module remat policies (model/remat.py: none, dots, dots_no_batch, full); None: from `remat`.
    remat_img: str | None = None
    remat_llm: str | None = None
    # Storage dtype of the trained params and Adam's moments: "float32" (big_vision) or "bfloat16"
    # (half the memory of params + grads + moments; updates are rounded to bfloat16).
    param_dtype: str = "float32"
    checkpoint_every: int = 0  # 0: no intermediate checkpoints
    seed: int = 0


def progress_kwargs(progress: bool | None) -> dict:
    """tqdm options: True / False force the bar on / off; None leaves it to tqdm's defaults, which the
    TQDM_DISABLE environment variable (set by `--quiet`) overrides."""
    return {} if progress is None else {"disable": not progress}


def schedule(num_steps: int, warmup_fraction: float) -> optax.Schedule:
    """Multiplier in [0, 1]: linear warmup over the first 5% of steps, then cosine decay to 0."""
    warmup = int(round(num_steps * warmup_fraction))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1),
        end_value=0.0)


def _is_kernel(path: tuple, _leaf: Any) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


def _update_rule(cfg: TrainConfig) -> list[optax.GradientTransformation]:
    """Adam at cfg.lr, decoupled weight decay on kernels, the warmup-cosine schedule (no clipping); a list,
    so that the default optimizer chains it flat after the clip (its state keeps its layout)."""
    return [
        optax.scale_by_adam(b2=cfg.b2),
        optax.scale(cfg.lr),
        optax.add_decayed_weights(cfg.weight_decay,
                                  mask=lambda p: jax.tree_util.tree_map_with_path(_is_kernel, p)),
        optax.scale_by_schedule(schedule(cfg.num_steps, cfg.warmup_fraction)),
        optax.scale(-1.0),
    ]


def make_optimizer(params: Any, cfg: TrainConfig) -> optax.GradientTransformation:
    frozen = {"img": cfg.freeze_img, "llm": cfg.freeze_llm}
    labels = {group: jax.tree_util.tree_map(lambda _, f=frozen.get(group, False): "frozen" if f else "train",  # noqa: B008
                                            subtree)
              for group, subtree in params.items()}
    if cfg.freeze_img_tower and not cfg.freeze_img and "img" in params:
        labels["img"] = img_tower_labels(params["img"])
    elif cfg.img_tower_lr_mult != 1.0 and not cfg.freeze_img and "img" in params:
        return _tower_lr_optimizer(labels, img_tower_labels(params["img"], tower="tower"), cfg)
    trainable = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), *_update_rule(cfg))
    return optax.multi_transform({"train": trainable, "frozen": optax.set_to_zero()}, labels)


def _tower_lr_optimizer(labels: dict, img_labels: Any, cfg: TrainConfig) -> optax.GradientTransformation:
    """make_optimizer with the image tower's updates (weight decay included) scaled by `img_tower_lr_mult`.
    The gradients are clipped together, by the norm of everything trained (tower included; frozen groups
    zeroed first so they do not count), as in the optimizer without the option."""
    labels = {**labels, "img": img_labels}
    zero_frozen = optax.multi_transform({"train": optax.identity(), "tower": optax.identity(),
                                         "frozen": optax.set_to_zero()}, labels)
    rules = {"train": optax.chain(*_update_rule(cfg)),
             "tower": optax.chain(*_update_rule(cfg), optax.scale(cfg.img_tower_lr_mult)),
             "frozen": optax.set_to_zero()}
    return optax.chain(zero_frozen, optax.clip_by_global_norm(cfg.grad_clip_norm),
                       optax.multi_transform(rules, labels))


def img_tower_labels(img: Any, tower: str = "frozen") -> Any:
    """optax.multi_transform labels for an `img` tree: `tower` ('frozen' under `freeze_img_tower`) for the
    tower, 'train' for its projector `head`."""
    return {name: jax.tree_util.tree_map(lambda _, n=name: "train" if n == "head" else tower, sub)  # noqa: B008
            for name, sub in img.items()}


def per_example_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array,
                     label_smoothing: float) -> jax.Array:
    """Mean smoothed cross-entropy over each example's loss tokens -> [B] (model/losses.py)."""
    return masked_mean(token_losses(logits, targets, label_smoothing), mask)


# "auto" chunks the loss above this many float32 logits (1 GiB: 3b at batch 32 x 64 text positions
# has 2 GiB): below it the dense logits' memory does not matter and the dense loss is faster
# (docs/efficiency.md).
AUTO_CHUNK_VALUES = 1 << 28


def _chunk_loss(cfg_loss_impl: str, num_logits: int) -> bool:
    if cfg_loss_impl not in ("auto", "dense", "chunked"):
        raise ValueError(f"TrainConfig.loss_impl: expected 'auto', 'dense' or 'chunked', got {cfg_loss_impl!r}")
    return cfg_loss_impl == "chunked" or (cfg_loss_impl == "auto" and num_logits > AUTO_CHUNK_VALUES)


def build_model(config: PaliGemmaConfig, cfg: TrainConfig) -> PaliGemma:
    return PaliGemma(config, dtype=jnp.dtype(cfg.compute_dtype), dropout=cfg.dropout, remat=cfg.remat,
                     remat_img=cfg.remat_img, remat_llm=cfg.remat_llm)


def cast_params(params: Any, param_dtype: str) -> Any:
    """Floating-point params in TrainConfig.param_dtype (integer leaves, if any, untouched)."""
    if param_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"TrainConfig.param_dtype: expected 'float32' or 'bfloat16', got {param_dtype!r}")
    dtype = jnp.dtype(param_dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def make_loss_fn(model: PaliGemma, label_smoothing: float, loss_impl: str = "auto",
                 chunk: int | None = None) -> Callable:
    """(params, batch, rng) -> the batch's mean loss, with the dense or the chunked cross-entropy
    (`chunk` positions at a time; None: model.losses.default_chunk). uint8 images (the data pipeline's)
    are brought to [-1, 1] here, on the device."""
    def loss_fn(params, batch, rng):
        args = (normalize_images(batch["image"]), batch["text"][:, :-1], batch["mask_ar"][:, :-1],
                batch["mask_input"][:, :-1])
        targets = batch["text"][:, 1:]
        vocab = model.config.llm.vocab_size
        if _chunk_loss(loss_impl, targets.size * vocab):
            hidden = model.apply({"params": params}, *args, train=True, rngs={"dropout": rng},
                                 method=PaliGemma.text_hidden)
            head = {"llm": {"embedder": params["llm"]["embedder"]}}  # all text_logits reads
            token_loss = chunked_token_losses(
                hidden, targets, lambda h: model.apply({"params": head}, h, method=PaliGemma.text_logits),
                label_smoothing, chunk or default_chunk(vocab))
            return jnp.mean(masked_mean(token_loss, batch["mask_loss"][:, 1:]))
        logits = model.apply({"params": params}, *args, train=True, rngs={"dropout": rng})
        return jnp.mean(per_example_loss(logits, targets, batch["mask_loss"][:, 1:], label_smoothing))

    return loss_fn


def make_train_step(model: PaliGemma, tx: optax.GradientTransformation,
                    label_smoothing: float, shardings: StateShardings | None = None,
                    loss_impl: str = "auto") -> Callable:
    """The jitted step (params, opt_state, batch, rng) -> (params, opt_state, stats); with `shardings`,
    its inputs and outputs are pinned to the mesh (params and optimizer state by the partition rules,
    the batch over 'data', rng and stats replicated) and XLA inserts the gathers and reductions.
    `loss_impl` picks the dense or vocabulary-chunked loss (make_loss_fn)."""
    loss_fn = make_loss_fn(model, label_smoothing, loss_impl)

    def step(params, opt_state, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {
            "loss": loss, "grad_norm": optax.global_norm(grads)}

    if shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    s = shardings
    return jax.jit(step, donate_argnums=(0, 1), in_shardings=(s.params, s.opt_state, s.batch, s.scalar),
                   out_shardings=(s.params, s.opt_state, s.scalar))


@dataclass(frozen=True)
class StateShardings:
    """Where each part of the training state lives on `mesh` (trees of NamedSharding)."""

    mesh: Mesh
    params: Any
    opt_state: Any
    batch: Any
    scalar: Any

    @classmethod
    def build(cls, mesh: Mesh, params: Any, tx: optax.GradientTransformation) -> StateShardings:
        """Optimizer state follows the params it mirrors: the rules match on the end of each leaf's path
        (Adam's mu/nu of llm/.../q_einsum/w end in that name) and the FSDP split needs only its shape;
        counters and other scalars are replicated."""
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
        return cls(mesh=mesh, params=sharding.param_shardings(shapes, mesh),
                   opt_state=sharding.param_shardings(jax.eval_shape(tx.init, shapes), mesh),
                   batch=sharding.batch_sharding(mesh), scalar=sharding.replicated(mesh))


class NonFiniteLoss(RuntimeError):
    """A step's loss or gradient norm is NaN or infinite: the cell stops, with no checkpoint of the state
    that step produced and no record (the scheduler reports the one line)."""


# How many steps the host runs ahead of the stats it has read: the loss of step s is read once step
# s + STATS_LAG has been dispatched, so the host waits on the device only to keep that many in flight.
STATS_LAG = 2


class _Reporter:
    """Each step's loss and grad norm, read from the device a few steps late (no per-step sync), checked
    for NaN/Inf, then written to the CSV log, the experiment log and the progress bar."""

    def __init__(self, desc: str, start: int, lrs: np.ndarray, log: _StepLog, metrics_log: Any, bar: Any):
        self.desc, self.lrs, self.log, self.metrics_log, self.bar = desc, lrs, log, metrics_log, bar
        self.pending: deque[tuple[int, dict, int]] = deque()
        self.examples, self.loss, self.t0 = 0, float("nan"), time.perf_counter()

    def add(self, step: int, stats: dict, batch_size: int) -> None:
        """Stats of `step` (1-based, as logged), still on the device; their copy to the host starts now."""
        for value in stats.values():
            value.copy_to_host_async()
        self.pending.append((step, stats, batch_size))

    def report(self, keep: int = 0) -> None:
        """Read and log all but the `keep` most recent steps' stats; NonFiniteLoss for a NaN or Inf."""
        while len(self.pending) > keep:
            step, stats, batch_size = self.pending.popleft()
            loss, grad_norm = float(stats["loss"]), float(stats["grad_norm"])
            for name, value in (("loss", loss), ("gradient norm", grad_norm)):
                if not np.isfinite(value):
                    raise NonFiniteLoss(f"{self.desc}: the {name} is {value} at step {step}; stopped without "
                                        "saving that state")
            self.loss, self.examples = loss, self.examples + batch_size
            ex_per_s = self.examples / max(time.perf_counter() - self.t0, 1e-9)
            self.log.write(step, loss, grad_norm, ex_per_s)
            if self.metrics_log is not None:
                self.metrics_log.scalars(step, {"train/loss": loss, "train/lr": float(self.lrs[step - 1]),
                                                "train/grad_norm": grad_norm, "train/examples_per_s": ex_per_s})
            self.bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{ex_per_s:.1f}")
            self.bar.update(1)


def train(config: PaliGemmaConfig, params: Any, batches: Sequence[dict] | grain.MapDataset, cfg: TrainConfig, *,
          workdir: Path | None = None, progress: bool | None = None, desc: str = "train",
          metrics_log: Any = None, mesh: Mesh | None = None, data_workers: int = 0) -> tuple[Any, dict]:
    """Fine-tune `params` for cfg.num_steps on `batches[step]`; returns (params, summary).

    With `workdir`, a per-step CSV log goes to workdir/train_log.csv and, when cfg.checkpoint_every > 0,
    checkpoints to workdir/ckpt; an existing checkpoint is resumed from (an unreadable one is moved aside).
    `metrics_log` (an harness.cell.experiment_log.ExperimentLog) gets train/loss, train/lr, train/grad_norm and
    train/examples_per_s at every step, is cut back to the resumed step first and flushed at each
    checkpoint. `mesh` (default: this process's first device) is where the state lives; the returned
    params stay sharded on it. On a multi-host mesh `batches[step]` holds this process's rows of the global
    batch (sharding.process_rows), and only process 0 writes the CSV log.

    The device never waits on the host: the batches are read ahead by grain (data.host_batches, in
    `data_workers` worker processes, 0: reader threads only), the next one is put on the device while
    the step runs, and the stats are read STATS_LAG steps late. A NaN or Inf loss or gradient norm raises
    NonFiniteLoss when read, at the latest before the next checkpoint is saved.
    """
    mesh = sharding.local_mesh() if mesh is None else mesh
    model = build_model(config, cfg)
    params = cast_params(params, cfg.param_dtype)
    tx = make_optimizer(params, cfg)
    shards = StateShardings.build(mesh, params, tx)
    params = sharding.place(params, shards.params)
    opt_state = jax.jit(tx.init, out_shardings=shards.opt_state)(params)
    start = 0
    ckpt: Checkpoints | None = None
    if workdir is not None and cfg.checkpoint_every > 0:
        ckpt, restored = open_checkpoints(
            as_path(workdir) / "ckpt", cfg.checkpoint_every,
            {"params": params, "opt_state": opt_state, "step": np.int64(0)},
            {"params": shards.params, "opt_state": shards.opt_state, "step": shards.scalar})
        if restored is not None:
            params, opt_state, start = restored["params"], restored["opt_state"], int(restored["step"])
    step_fn = make_train_step(model, tx, cfg.label_smoothing, shards, cfg.loss_impl)
    primary = jax.process_index() == 0
    log = _StepLog(workdir_paths.as_path(workdir) / "train_log.csv" if workdir is not None and primary else None,
                   resume_from=start)
    if metrics_log is not None and hasattr(metrics_log, "resume_at"):
        metrics_log.resume_at(start)  # what was logged past the checkpoint is trained again
    rng = jax.jit(lambda: jax.random.key(cfg.seed), out_shardings=shards.scalar)()  # global on any mesh
    bar = tqdm(total=cfg.num_steps, initial=start, desc=desc, leave=False, **progress_kwargs(progress),
               unit="step", dynamic_ncols=True)
    # The lr each step's update used (optax counts updates from 0), computed once for the whole run.
    lrs = cfg.lr * np.asarray(schedule(cfg.num_steps, cfg.warmup_fraction)(np.arange(cfg.num_steps)))
    reporter = _Reporter(desc, start, lrs, log, metrics_log, bar)

    def to_device(host: dict) -> dict:
        if jax.process_count() == 1:  # multi-host: the rows are this host's part; resolve_mesh checked B
            sharding.check_batch(len(host["text"]), mesh)
        return sharding.put_batch(host, shards.batch)

    feed = host_batches(batches, start=start, stop=cfg.num_steps, workers=data_workers)

    def fetch() -> tuple[dict | None, BaseException | None]:
        """The next batch on the device, or the error reading it: raised when that batch's step comes, so
        the checkpoint due before it is still written (a bad example at step k keeps step k - 1's state)."""
        try:
            return to_device(next(feed)), None
        except BaseException as e:  # noqa: BLE001 - re-raised at its own step
            return None, e

    try:
        upcoming, failed = fetch() if start < cfg.num_steps else (None, None)
        for step in range(start, cfg.num_steps):
            if failed is not None:
                raise failed
            batch = upcoming
            params, opt_state, stats = step_fn(params, opt_state, batch, jax.random.fold_in(rng, step))
            reporter.add(step + 1, stats, batch["text"].shape[0])
            if step + 1 < cfg.num_steps:  # while the step runs: the next batch onto the device
                upcoming, failed = fetch()
            reporter.report(keep=STATS_LAG)
            if ckpt is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.num_steps:
                reporter.report()  # every loss up to this state is finite before it is saved
                ckpt.save(step + 1, {"params": params, "opt_state": opt_state, "step": np.int64(step + 1)})
                if metrics_log is not None and hasattr(metrics_log, "flush"):
                    metrics_log.flush()
        reporter.report()
    except BaseException as error:
        # An error mid-run (or Ctrl-C): log the steps that ran, and let the checkpoint being written
        # finish, so the rerun resumes from it instead of finding it half written.
        feed.close()
        if not isinstance(error, NonFiniteLoss):
            try:
                reporter.report()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        if ckpt is not None:
            try:
                ckpt.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        bar.close()
        log.close()
        raise
    feed.close()
    bar.close()
    if ckpt is not None:
        ckpt.close()
    log.close()
    return params, {"steps": cfg.num_steps, "resumed_from": start, "final_loss": reporter.loss,
                    "train_seconds": time.perf_counter() - reporter.t0}


class _StepLog:
    """Per-step metrics as CSV (step, loss, grad_norm, examples_per_s), appended across resumes. In a
    bucket it is written to a local copy uploaded whole every PUSH_S and at close (results/paths.py)."""

    PUSH_S = 30.0

    def __init__(self, target: workdir_paths.AnyPath | None, resume_from: int):
        self._file = None
        if target is None:
            return
        self._copy = workdir_paths.LocalCopy(target, push_every_s=self.PUSH_S)
        path = self._copy.local  # the file itself when it is local
        fresh = resume_from == 0 or not path.exists()
        if not fresh:  # steps logged after the checkpoint are trained again: drop them, not repeat them
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= resume_from]
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows(kept)
        self._file = open(path, "w" if fresh else "a", newline="")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(["step", "loss", "grad_norm", "examples_per_s"])

    def write(self, step: int, loss: float, grad_norm: float, ex_per_s: float) -> None:
        if self._file is not None:
            self._writer.writerow([step, f"{loss:.6f}", f"{grad_norm:.6f}", f"{ex_per_s:.2f}"])
            self._file.flush()
            self._copy.push_if_due()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._copy.close()
