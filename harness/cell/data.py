"""Input pipeline: task Examples -> model-ready batches, with grain, deterministic given the seed.

Images: optional white padding to a square (tables, molecules), bilinear resize to the cell's resolution,
value range [-1, 1] (big_vision `value_range(-1, 1)`, docs/paligemma2-facts.md §1.2). Text: big_vision's
prefix/suffix layout through `model.tokenizer` (facts §1.7).

Training batches form a grain `MapDataset` indexed by step, so a resumed run asks for batch `step` and gets
exactly the batch the interrupted run would have seen: no iterator state to checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grain
import numpy as np
from PIL import Image

from tasks.base import Example


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad with white on the right and bottom, so normalised box coordinates keep their origin."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    out[:h, :w] = image[..., :3]
    return out


def preprocess_image(image: np.ndarray, resolution: int, square_pad: bool = False) -> np.ndarray:
    """uint8 H x W x {1,3,4} -> float32 resolution x resolution x 3 in [-1, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3].astype(np.uint8)
    if square_pad:
        image = pad_to_square(image)
    resized = Image.fromarray(image).resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 127.5 - 1.0


@dataclass(frozen=True)
class TextSpec:
    """How text is laid out for one cell."""

    text_len: int
    square_pad: bool
    resolution: int


def _stack(rows: Sequence[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def train_row(ex: Example, target: str, tokenizer, spec: TextSpec) -> dict[str, np.ndarray]:
    """One example as the trainer sees it: the image in [-1, 1] at the cell's resolution, the tokens of
    [BOS prefix "\n" target EOS] and their masks."""
    enc = tokenizer.encode_train(ex.prefix, target, spec.text_len)
    return dict(image=preprocess_image(ex.image, spec.resolution, spec.square_pad),
                text=np.asarray(enc["tokens"], np.int32),
                mask_ar=np.asarray(enc["mask_ar"], np.int32),
                mask_loss=np.asarray(enc["mask_loss"], np.int32),
                mask_input=np.asarray(enc["mask_input"], np.int32))


def _choose_target(ex: Example, rng: np.random.Generator) -> str:
    return ex.targets[int(rng.integers(len(ex.targets)))] if ex.targets else ""


def _batched(rows: grain.MapDataset, batch_size: int, num_steps: int,
             part: slice | None = None) -> grain.MapDataset:
    """Item k: rows [k * batch_size, (k + 1) * batch_size), or with `part` only that slice of them (the
    rows one process of a multi-host job feeds, model/sharding.process_rows); rows outside it are never
    loaded."""
    if part is None or (part.start in (None, 0) and part.stop in (None, batch_size)):
        return rows.batch(batch_size, drop_remainder=True, batch_fn=_stack).slice(slice(0, num_steps))
    start, stop = part.start or 0, batch_size if part.stop is None else part.stop
    return grain.MapDataset.range(num_steps).map(
        lambda k: _stack([rows[k * batch_size + i] for i in range(start, stop)]))


def train_batches(examples: Sequence[Example], tokenizer, spec: TextSpec, *, batch_size: int,
                  num_steps: int, seed: int, rows: slice | None = None) -> grain.MapDataset:
    """A MapDataset whose item `step` is the training batch of that step.

    Epochs are reshuffled with distinct seeds; each example's training target is drawn from its targets
    (big_vision's `choice`) by a generator seeded with (seed, epoch, index), so the batch of a step never
    depends on what ran before it. `rows`: only these rows of every batch (one host's part).
    """
    n = len(examples)
    if n == 0:
        raise ValueError("the training split is empty")
    epochs = -(-num_steps * batch_size // n)  # ceil

    def load(index: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(index, n)
        j = int(np.random.default_rng([seed, epoch]).permutation(n)[i])
        ex = examples[j]
        return train_row(ex, _choose_target(ex, np.random.default_rng([seed, epoch, j])), tokenizer, spec)

    return _batched(grain.MapDataset.range(epochs * n).map(load), batch_size, num_steps, rows)


@dataclass(frozen=True)
class Source:
    """One task's examples in a pretraining mixture, with its sampling weight."""

    examples: Sequence[Example]
    weight: float = 1.0
    square_pad: bool = False


def mixture_batches(sources: Sequence[Source], tokenizer, *, text_len: int, resolution: int,
                    batch_size: int, num_steps: int, seed: int) -> grain.MapDataset:
    """Batches of a weighted multitask mixture: example k draws its source by weight, then an example
    and a target, from a generator seeded with (seed, k); indexed by step like `train_batches`."""
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    if not len(sources) or weights.min() < 0 or weights.sum() <= 0:
        raise ValueError(f"mixture weights must be non-negative with a positive sum, got {weights}")
    probs = weights / weights.sum()

    def load(index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, index])
        src = sources[int(rng.choice(len(sources), p=probs))]
        ex = src.examples[int(rng.integers(len(src.examples)))]
        spec = TextSpec(text_len=text_len, square_pad=src.square_pad, resolution=resolution)
        return train_row(ex, _choose_target(ex, rng), tokenizer, spec)

    return _batched(grain.MapDataset.range(num_steps * batch_size).map(load), batch_size, num_steps)


@dataclass
class EvalBatch:
    ids: list[str]  # only the real examples; the batch is padded up to its fixed size
    arrays: dict[str, np.ndarray]


def eval_batches(examples: Sequence[Example], tokenizer, spec: TextSpec, *,
                 batch_size: int) -> Iterator[EvalBatch]:
    """Fixed-size batches of eval prompts (the last one padded by repeating its first row)."""
    for start in range(0, len(examples), batch_size):
        chunk = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
        rows = []
        for ex in chunk:
            enc = tokenizer.encode_eval(ex.prefix, spec.text_len)
            rows.append(dict(image=preprocess_image(ex.image, spec.resolution, spec.square_pad),
                             text=np.asarray(enc["tokens"], np.int32),
                             mask_ar=np.asarray(enc["mask_ar"], np.int32),
                             mask_input=np.asarray(enc["mask_input"], np.int32)))
        ids = [ex.id for ex in chunk]
        rows += [rows[0]] * (batch_size - len(rows))
        yield EvalBatch(ids=ids, arrays=_stack(rows))
