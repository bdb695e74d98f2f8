"""Training-set sizes for planning epoch-based recipes (`run --dry-run`): an epoch recipe's steps are
epochs x examples / batch, so its FLOPs need the size of the task's `train` role.

Counted from the prepared data when it is there (nothing is prepared for a dry run); otherwise the
published size of the official dataset below, with the role's slicing applied as the plugin slices it.
"""

from __future__ import annotations

from pathlib import Path

# Examples in each plugin's `train` role on the official data.
KNOWN_TRAIN_SIZES: dict[str, tuple[int, str]] = {
    # VQAv2 (visualqa.org, v2 release): 443,757 train + 214,354 validation questions; the role is
    # big_vision's "train + validation[:-10240]" (docs/paligemma2-facts.md §2.1).
    "vqav2": (443_757 + 214_354 - 10_240, "VQAv2 443,757 train + 214,354 val questions, less 10,240 minival"),
    # DocVQA (RRC task 1): 39,463 train questions; the role is "train[:-5%]" (1,973 as TFDS rounds).
    "docvqa": (39_463 - 1_973, "DocVQA 39,463 train questions, less the 5% minival"),
    # COCO Karpathy splits (dataset_coco.json): 82,783 train + 30,504 restval images; the role is the
    # train images less the last 2% (1,656, minival) plus restval (tasks/coco_captions.py).
    "coco_captions": (82_783 - 1_656 + 30_504, "COCO Karpathy 82,783 train less 2% + 30,504 restval images"),
}


def counted_train_size(task, data_dir: str | Path, cache_dir: str | Path | None) -> int | None:
    """Examples in the `train` role of data already prepared in the cache; None when it is not there."""
    from tasks.prepared import prepared_sizes
    from tasks.splits import resolve_split, split_names

    expression = task.split_name("train")
    try:
        sizes = prepared_sizes(task.name, task.version, Path(data_dir), cache_dir, split_names(expression))
        if sizes is None:
            return None
        total = 0
        for term in resolve_split(expression, sizes).split("+"):
            name, _, bounds = term.partition("[")
            lo, hi = (int(b) for b in bounds.rstrip("]").split(":")) if bounds else (0, sizes[name])
            total += hi - lo
        return total
    except Exception:  # noqa: BLE001 - a plan falls back to the published size
        return None


def train_size(task, data_dir: str | Path, cache_dir: str | Path | None) -> tuple[int | None, str]:
    """(size, where it comes from): counted, published, or (None, why not)."""
    counted = counted_train_size(task, data_dir, cache_dir) if Path(data_dir).is_dir() else None
    if counted is not None:
        return counted, "counted from the prepared data"
    if task.name in KNOWN_TRAIN_SIZES:
        size, source = KNOWN_TRAIN_SIZES[task.name]
        return size, f"published size ({source})"
    return None, "no published size; prepare the data (run it once) to count it"
