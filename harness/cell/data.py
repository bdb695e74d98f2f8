"""Input pipeline: task Examples -> uint8 batches, with grain, deterministic given the seed and the step.

Images: optional white padding to a square (tables, molecules), bilinear resize to the cell's resolution
with or without antialiasing (`Recipe.antialias`), kept uint8 on the host: a 896 px batch of 32 is 77 MB
instead of 308 MB in float32. The value range [-1, 1] (big_vision `value_range(-1, 1)`,
docs/paligemma2-facts.md §1.2) is applied on the device, inside the jitted step (`normalize_images`).
Text: big_vision's prefix/suffix layout through `model.tokenizer` (facts §1.7).

Training batches form a grain `MapDataset` indexed by step, so a resumed run asks for batch `step` and gets
exactly the batch the interrupted run would have seen: no iterator state to checkpoint. Example order is
grain's Feistel index shuffle (`grain.experimental.index_shuffle`), reseeded per epoch: loading one example
costs O(1) whatever the split's size. `host_batches` feeds the trainer from that dataset with grain's
reader threads and worker processes, ahead of the step; the batches do not depend on how many there are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grain
import numpy as np
from grain.experimental import index_shuffle
from PIL import Image

from model.siglip import normalize_images
from tasks.base import Example

# Rounds of grain's Feistel network per shuffle (its `MapDataset.shuffle` uses 4).
SHUFFLE_ROUNDS = 4
# Below this many examples an epoch's order is numpy's permutation(n) instead: index_shuffle walks cycles
# on small domains and gets slow there (grain 0.2.18 on the CPU: 4 us per index at n = 650k and 9 us at
# 4096, 0.4 ms at 100, 12 ms at 2), while permutation(n) costs under 35 us up to 4096.
FEISTEL_MIN = 4096
# Reader threads and batches read ahead per process (the trainer's, or each worker's). A thread reads
# whole batches; PIL's decode and resize release the GIL, so two threads keep a core busy.
READ_THREADS = 2
READ_AHEAD = 2
# Most worker processes the default starts on one host (each holds READ_AHEAD + 1 batches).
MAX_DEFAULT_WORKERS = 8


# --- images -----------------------------------------------------------------------------------------------

def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad with white on the right and bottom, so normalised box coordinates keep their origin."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    out[:h, :w] = image[..., :3]
    return out


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output position: the two input positions and the weight of the second, half-pixel centres,
    clamped at the edges (where a kernel renormalised over the valid pixels gives the same value)."""
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), (x - lo).astype(np.float32)[:, None, None]


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """H x W x C -> height x width x C float32, bilinear WITHOUT antialiasing: each output pixel mixes
    the two nearest input pixels per axis, whatever the scale. This is tf.image.resize(antialias=False),
    which big_vision's plain `resize` op calls, and jax.image.resize(method="bilinear", antialias=False).
    PIL's BILINEAR widens its kernel when downscaling (it antialiases), so it cannot stand in."""
    image = np.asarray(image, np.float32)
    y0, y1, wy = _bilinear_taps(image.shape[0], height)
    rows = image[y0] * (1 - wy) + image[y1] * wy
    x0, x1, wx = _bilinear_taps(image.shape[1], width)
    wx = wx.reshape(1, width, 1)
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def host_image(image: np.ndarray, resolution: int, square_pad: bool = False,
               antialias: bool = True) -> np.ndarray:
    """uint8 H x W x {1,3,4} -> uint8 resolution x resolution x 3: the image as the host ships it.

    antialias=True is PIL's BILINEAR (a triangle filter widened by the downscale factor, like
    tf.image.resize(antialias=True)); False is `resize_bilinear`, rounded to uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3].astype(np.uint8)
    if square_pad:
        image = pad_to_square(image)
    if antialias:
        return np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.BILINEAR))
    return np.clip(np.rint(resize_bilinear(image, resolution, resolution)), 0, 255).astype(np.uint8)


def preprocess_image(image: np.ndarray, resolution: int, square_pad: bool = False,
                     antialias: bool = True) -> np.ndarray:
    """uint8 H x W x {1,3,4} -> float32 resolution x resolution x 3 in [-1, 1] (host_image, normalised)."""
    return normalize_images(host_image(image, resolution, square_pad, antialias))


# --- rows ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextSpec:
    """How text and images are laid out for one cell."""

    text_len: int
    square_pad: bool
    resolution: int
    antialias: bool = True  # Recipe.antialias


def _stack(rows: Sequence[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def host_row(ex: Example, target: str, tokenizer, spec: TextSpec,
             image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One training example as the host ships it: the uint8 image at the cell's resolution (`image`
    instead of the example's, when given), the tokens of [BOS prefix "\n" target EOS] and their masks."""
    enc = tokenizer.encode_train(ex.prefix, target, spec.text_len)
    pixels = ex.image if image is None else image
    return dict(image=host_image(pixels, spec.resolution, spec.square_pad, spec.antialias),
                text=np.asarray(enc["tokens"], np.int32),
                mask_ar=np.asarray(enc["mask_ar"], np.int32),
                mask_loss=np.asarray(enc["mask_loss"], np.int32),
                mask_input=np.asarray(enc["mask_input"], np.int32))


def train_row(ex: Example, target: str, tokenizer, spec: TextSpec) -> dict[str, np.ndarray]:
    """`host_row` with the image in [-1, 1], ready for the model without the trainer's step."""
    row = host_row(ex, target, tokenizer, spec)
    return {**row, "image": normalize_images(row["image"])}


def _seed32(*parts: int) -> int:
    """A uint32 seed (what index_shuffle takes) from any integers, e.g. (seed, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def shuffled(index: int, n: int, seed: int) -> tuple[int, int]:
    """Draw `index` of an endless stream of epochs over n examples -> (epoch, example index).

    Each epoch is a permutation of range(n) seeded with (seed, epoch): grain's Feistel index shuffle,
    O(1) per draw whatever n (no permutation(n) is built), or below FEISTEL_MIN examples numpy's."""
    epoch, position = divmod(int(index), n)
    if n < FEISTEL_MIN:
        return epoch, int(np.random.default_rng([seed, epoch]).permutation(n)[position])
    return epoch, index_shuffle(position, max_index=n - 1, seed=_seed32(seed, epoch), rounds=SHUFFLE_ROUNDS)


def target_at(ex: Example, visit: int, seed: int, index: int) -> str:
    """The training target of example `index` at its `visit`-th visit (0, 1, ...): its targets in a
    fixed order perm_{seed, index}, cycled, so every answer or caption is trained on before any repeats
    (sampling without replacement, as big_vision's `choice_no_replacement`). "" for no targets."""
    k = len(ex.targets)
    if k == 0:
        return ""
    return ex.targets[int(np.random.default_rng([seed, index, 1]).permutation(k)[visit % k])]


@dataclass(frozen=True)
class _TrainBatch:
    """Batch `step` of a training split: rows `positions` of that step's global rows (one host's part).
    A plain class (not a closure) so grain's worker processes receive it pickled."""

    examples: Sequence[Example]
    tokenizer: Any
    spec: TextSpec
    batch_size: int
    positions: tuple[int, ...]
    seed: int
    train_image: Callable[[Example, tuple[int, ...]], np.ndarray | None] | None = None

    def row(self, step: int, position: int) -> dict[str, np.ndarray]:
        epoch, j = shuffled(step * self.batch_size + position, len(self.examples), self.seed)
        ex = self.examples[j]
        image = None
        if self.train_image is not None:  # e.g. ChemDraw redraws its molecules per (seed, step, row)
            image = self.train_image(ex, (self.seed, step, position))
        return host_row(ex, target_at(ex, epoch, self.seed, j), self.tokenizer, self.spec, image)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        return _stack([self.row(int(step), p) for p in self.positions])


def _positions(batch_size: int, rows: slice | np.ndarray | None) -> tuple[int, ...]:
    """The rows of every batch this process loads (model/sharding.process_rows: a slice or an array)."""
    every = np.arange(batch_size)
    return tuple(int(r) for r in (every if rows is None else every[rows]))


def train_batches(examples: Sequence[Example], tokenizer, spec: TextSpec, *, batch_size: int,
                  num_steps: int, seed: int, rows: slice | np.ndarray | None = None,
                  train_image: Callable[[Example, tuple[int, ...]], np.ndarray | None] | None = None,
                  ) -> grain.MapDataset:
    """A MapDataset whose item `step` is the training batch of that step (uint8 images).

    Row r of step s is draw s * batch_size + r of `shuffled` epochs over the examples; its target is
    `target_at` its epoch, so the batch of a step never depends on what ran before it. `rows`: only these
    rows of every batch (one host's part; the others are never loaded). `train_image(example, (seed,
    step, row))`: a fresh image for the row (Task.train_image), None to keep the stored one.
    """
    if len(examples) == 0:
        raise ValueError("the training split is empty")
    load = _TrainBatch(examples, tokenizer, spec, batch_size, _positions(batch_size, rows), seed, train_image)
    return grain.MapDataset.range(num_steps).map(load)


@dataclass(frozen=True)
class Source:
    """One task's examples in a pretraining mixture, with its sampling weight."""

    examples: Sequence[Example]
    weight: float = 1.0
    square_pad: bool = False


@dataclass(frozen=True)
class _MixtureBatch:
    sources: tuple[Source, ...]
    probs: np.ndarray
    tokenizer: Any
    text_len: int
    resolution: int
    batch_size: int
    seed: int

    def row(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        src = self.sources[int(rng.choice(len(self.sources), p=self.probs))]
        ex = src.examples[int(rng.integers(len(src.examples)))]
        spec = TextSpec(text_len=self.text_len, square_pad=src.square_pad, resolution=self.resolution)
        target = ex.targets[int(rng.integers(len(ex.targets)))] if ex.targets else ""
        return host_row(ex, target, self.tokenizer, spec)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        return _stack([self.row(int(step) * self.batch_size + r) for r in range(self.batch_size)])


def mixture_batches(sources: Sequence[Source], tokenizer, *, text_len: int, resolution: int,
                    batch_size: int, num_steps: int, seed: int) -> grain.MapDataset:
    """Batches of a weighted multitask mixture: example k draws its source by weight, then an example
    and a target, from a generator seeded with (seed, k); indexed by step like `train_batches`."""
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    if not len(sources) or weights.min() < 0 or weights.sum() <= 0:
        raise ValueError(f"mixture weights must be non-negative with a positive sum, got {weights}")
    load = _MixtureBatch(tuple(sources), weights / weights.sum(), tokenizer, text_len, resolution, batch_size, seed)
    return grain.MapDataset.range(num_steps).map(load)


def training_examples(task: Any, data_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                      seed: int = 0) -> Sequence[Example]:
    """What a cell of `task` trains on: its train split, or, when the plugin has `train_mixture(data_dir)`
    (text spotting: tasks/icdar15.py), the mixture of those sources drawn by tasks/mixture.py's seeded
    O(1) sampler, each source's examples read from the same prepared-data cache."""
    mixture = getattr(task, "train_mixture", None)
    if mixture is None:
        return task.examples(data_dir, "train", cache_dir=cache_dir)
    from tasks.mixture import MixtureExamples
    from tasks.registry import get_task

    sources = mixture(data_dir)
    parts = [get_task(s.task).examples(s.manual_dir, s.role, cache_dir=cache_dir) for s in sources]
    return MixtureExamples(parts, [s.weight for s in sources], seed)


# --- feeding the trainer ------------------------------------------------------------------------------------

def default_workers() -> int:
    """Worker processes per host when the grid does not say (`data_workers`): half the cores, at most 8,
    leaving the other half to the trainer's own thread, the reader threads and XLA. Below 4 cores none: a
    worker process would take the one core the step needs, and starting it costs ~2 s per cell (a demo
    cell trains in seconds; measured on 2 cores, 2026-12-06)."""
    cores = os.cpu_count() or 1
    return 0 if cores < 4 else min(MAX_DEFAULT_WORKERS, cores // 2)


def host_batches(batches: Sequence[dict] | grain.MapDataset, *, start: int = 0, stop: int | None = None,
                 workers: int = 0, threads: int = READ_THREADS,
                 read_ahead: int = READ_AHEAD) -> grain.DatasetIterator:
    """Batches start, start + 1, ..., stop - 1 of `batches` (a MapDataset of batches, or any sequence
    of them), in order, read ahead of the caller by `threads` reader threads in each of `workers` worker
    processes (0: the threads run in this process).

    A resumed run starts at its step: the dataset is sliced there, so nothing before it is loaded. Each
    worker reads every workers-th batch and grain interleaves them back in order, so the batches are
    the same for any number of workers and threads. Close the iterator (`.close()`) to stop the workers.
    """
    ds = batches if isinstance(batches, grain.MapDataset) else grain.MapDataset.source(batches)
    ds = ds[start:len(ds) if stop is None else stop]
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=read_ahead))
    if workers > 0:
        _absl_flags_at_defaults()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=1))
    return iter(it)


def _absl_flags_at_defaults() -> None:
    """grain's worker processes read absl flags (its profiling switch), which only a program started by
    absl.app has parsed; elsewhere reading one raises UnparsedFlagAccessError. Marking the flags parsed
    leaves every one at its default, which is what later grain versions fall back to."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


# --- eval ---------------------------------------------------------------------------------------------------

@dataclass
class EvalBatch:
    ids: list[str]  # only the real examples; the batch is padded up to its fixed size
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class _EvalBatch:
    examples: Sequence[Example]
    tokenizer: Any
    spec: TextSpec
    batch_size: int

    def __call__(self, k: int) -> EvalBatch:
        chunk = [self.examples[i] for i in range(k * self.batch_size,
                                                 min((k + 1) * self.batch_size, len(self.examples)))]
        rows = []
        for ex in chunk:
            enc = self.tokenizer.encode_eval(ex.prefix, self.spec.text_len)
            rows.append(dict(image=host_image(ex.image, self.spec.resolution, self.spec.square_pad,
                                              self.spec.antialias),
                             text=np.asarray(enc["tokens"], np.int32),
                             mask_ar=np.asarray(enc["mask_ar"], np.int32),
                             mask_input=np.asarray(enc["mask_input"], np.int32)))
        rows += [rows[0]] * (self.batch_size - len(rows))
        return EvalBatch(ids=[ex.id for ex in chunk], arrays=_stack(rows))


def eval_batches(examples: Sequence[Example], tokenizer, spec: TextSpec, *,
                 batch_size: int) -> Iterator[EvalBatch]:
    """Fixed-size batches of eval prompts (the last one padded by repeating its first row), uint8
    images (model.siglip.normalize_images before the model), read ahead of the decoder by reader threads."""
    count = -(-len(examples) // batch_size)
    ds = grain.MapDataset.range(count).map(_EvalBatch(examples, tokenizer, spec, batch_size))
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_AHEAD)))
    try:
        yield from it
    finally:
        it.close()
