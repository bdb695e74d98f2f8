"""COCO captions (Karpathy splits), scored with CIDEr like big_vision's `cococap` transfer.

Recipe and splits: docs/paligemma2-facts.md §2.3 (big_vision `cococap.py` sweep_best) and §3.3
(Table 14, per-size learning rates). Metric: pycocoevalcap with PTB tokenization (metric-facts §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from metrics.captioning import caption_scores
from metrics.sacrebleu_metrics import sacrebleu_scores
from model.config import config_for
from tasks.base import DataError, Example, Recipe, Scores, Task, paper_point, read_json, text
from tasks.builder import RawFilesBuilder
from tasks.demo.coco_captions import write_coco_demo

KARPATHY_FILE = "dataset_coco.json"
# big_vision trains on `train[:98%]+restval` and evaluates minival on `train[-2%:]` (§2.3). TFDS
# rounds 2% of a demo-sized split to 0 and then returns the whole split, so we carve minival when
# building instead: the last 2% (at least one image) of the training images in image-id order.
MINIVAL_FRACTION = 0.02
# The metrics the plugin reports; SPICE is added only where its CoreNLP models are installed.
METRICS = ("cider", "bleu4", "meteor", "rouge_l", "spice")

DOWNLOAD_INSTRUCTIONS = """\
COCO captions needs, in the manual directory:
  annotations/captions_train2014.json, annotations/captions_val2014.json
      from https://images.cocodataset.org/annotations/annotations_trainval2014.zip
  train2014/*.jpg  from https://images.cocodataset.org/zips/train2014.zip
  val2014/*.jpg    from https://images.cocodataset.org/zips/val2014.zip
  dataset_coco.json (optional, recommended): Karpathy's split file, from
      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip
With dataset_coco.json the splits are Karpathy's (train+restval / val / test, as big_vision's
TFDS coco_captions); without it, train2014 trains and val2014 evaluates (no test split)."""


@dataclass(frozen=True)
class _Item:
    image_id: int
    path: Path
    captions: tuple[str, ...]


class CocoCaptionsBuilder(RawFilesBuilder):
    """COCO 2014 captions from the official JSON files; config "karpathy" or "official" splits."""

    name = "pgt_coco_captions"
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="karpathy", description="Karpathy splits (dataset_coco.json)"),
        tfds.core.BuilderConfig(name="official", description="train2014 / val2014"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "image": tfds.features.Image(encoding_format="jpeg"),
            "captions": tfds.features.Sequence(tfds.features.Text()),
        }))

    def _split_generators(self, dl_manager):
        splits = read_splits(Path(dl_manager.manual_dir), self.builder_config.name == "karpathy")
        return {name: self._generate_examples(items) for name, items in splits.items() if items}

    def _generate_examples(self, items: list[_Item]):
        for item in items:
            yield item.image_id, {"id": str(item.image_id), "image": item.path,
                                  "captions": list(item.captions)}


def read_splits(manual_dir: Path, karpathy: bool) -> dict[str, list[_Item]]:
    """TFDS split name -> images with their captions, checked against the files on disk."""
    images: dict[int, tuple[str, str]] = {}  # image id -> (folder, file name)
    captions: dict[int, list[str]] = {}
    for folder in ("train2014", "val2014"):
        _read_annotations(manual_dir / "annotations" / f"captions_{folder}.json", folder,
                          images, captions)
    if karpathy:
        groups = _karpathy_groups(manual_dir / KARPATHY_FILE, images)
    else:
        groups = {"train": sorted(i for i, (f, _) in images.items() if f == "train2014"),
                  "val": sorted(i for i, (f, _) in images.items() if f == "val2014")}
    train = sorted(groups.pop("train"))
    held_out = max(1, round(MINIVAL_FRACTION * len(train))) if len(train) > 1 else 0
    groups = {"train": train[:len(train) - held_out] + sorted(groups.pop("restval", [])),
              "minival": train[len(train) - held_out:], **groups}
    splits = {}
    for name, ids in groups.items():
        splits[name] = []
        for image_id in ids:
            folder, file_name = images[image_id]
            path = manual_dir / folder / file_name
            if not path.is_file():
                raise DataError(f"{path}: image {image_id} is listed in "
                                f"captions_{folder}.json but the file is missing")
            if not captions.get(image_id):
                raise DataError(f"captions_{folder}.json: image {image_id} has no caption")
            splits[name].append(_Item(image_id, path, tuple(captions[image_id])))
    return splits


def _read_annotations(path: Path, folder: str, images: dict, captions: dict) -> None:
    if not path.is_file():
        raise DataError(f"{path} is missing.\n{DOWNLOAD_INSTRUCTIONS}")
    content = read_json(path)
    for field in ("images", "annotations"):
        if not isinstance(content, dict) or not isinstance(content.get(field), list):
            raise DataError(f"{path}: expected a COCO captions object with a list {field!r}")
    for n, image in enumerate(content["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) \
                or not isinstance(image.get("file_name"), str):
            raise DataError(f"{path}: images[{n}] needs an integer 'id' and a 'file_name', "
                            f"got {image!r}")
        images[image["id"]] = (folder, image["file_name"])
    for n, ann in enumerate(content["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in images \
                or not isinstance(ann.get("caption"), str):
            raise DataError(f"{path}: annotations[{n}] needs an 'image_id' listed in 'images' and "
                            f"a string 'caption', got {ann!r}")
        captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())


def _karpathy_groups(path: Path, images: Mapping[int, tuple[str, str]]) -> dict[str, list[int]]:
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(f"{path}: expected Karpathy's split file, an object with a list 'images'")
    groups: dict[str, list[int]] = {"train": [], "restval": [], "val": [], "test": []}
    for n, entry in enumerate(content["images"]):
        cocoid = entry.get("cocoid") if isinstance(entry, dict) else None
        split = entry.get("split") if isinstance(entry, dict) else None
        if split not in groups or not isinstance(cocoid, int):
            raise DataError(f"{path}: images[{n}] needs an integer 'cocoid' and a 'split' in "
                            f"{sorted(groups)}, got {entry!r}")
        if cocoid not in images:
            raise DataError(f"{path}: images[{n}] has cocoid {cocoid}, which is in neither "
                            "captions_train2014.json nor captions_val2014.json")
        groups[split].append(cocoid)
    return groups


# Table 14 (§3.3): the lr with the best COCOcap minival CIDEr at 224 per size (28B ties 6e-7 and
# 3e-6; we take the lower, as the paper finds larger models prefer lower lrs). The paper reuses
# the 224 selection at 448; we reuse it at 896 too (COCO has no 896 numbers).
_BEST_LR = {"3b": 3e-6, "10b": 6e-7, "28b": 6e-7}


class CocoCaptions(Task):
    name = "coco_captions"
    description = "COCO captions (Karpathy splits), CIDEr; big_vision cococap transfer"
    headline = "cider"
    version = 2  # bump with any change to prompt, parse, metric, recipe or demo data (2: no antialias)
    splits = {"train": "train", "minival": "minival", "eval": "val", "test": "test"}
    download_instructions = DOWNLOAD_INSTRUCTIONS
    PROMPT = "caption en"  # §2.3

    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        config = "karpathy" if (Path(manual_dir) / KARPATHY_FILE).is_file() else "official"
        return CocoCaptionsBuilder(config=config, data_dir=str(data_dir))

    def example(self, record: Mapping[str, Any]) -> Example:
        captions = tuple(text(c) for c in record["captions"])
        return Example(id=text(record["id"]), image=record["image"], prefix=self.PROMPT,
                       targets=captions, reference=list(captions))

    def recipe(self, size: str, resolution: int) -> Recipe:
        config_for(size, resolution)  # a KeyError naming the sizes / resolutions that exist
        size, resolution = paper_point(size, resolution)
        # §2.3 sweep_best: 5 epochs ("one epoch of captions": 5 per image), batch 256, wd 1e-6,
        # text_len 32, beam search with 2 beams, at most 32 decoded tokens; images resized without
        # antialiasing (cococap.py's `resize(res)`, where VQAv2 and DocVQA pass antialias=True). The lr
        # grid is the paper's default, swept at 224 px and reused at 448 (§4.1).
        return Recipe(batch_size=256, epochs=5, lr=_BEST_LR[size], weight_decay=1e-6,
                      text_len=32, decode="beam", beam_size=2, max_decode_len=32, antialias=False)

    def parse(self, text: str) -> str | None:
        """The caption itself; None (a miss) for output that is not text."""
        return text.strip() if isinstance(text, str) else None

    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        """A missing prediction is scored as an empty caption; so is an empty or non-text one,
        which is also counted unparsable."""
        extra = [k for k in predictions if k not in references]
        if extra:
            raise ValueError(f"{len(extra)} prediction id(s) are not in the references, e.g. "
                             f"{extra[:3]}")
        captions, unparsable = {}, 0
        for key in references:
            pred = predictions.get(key, "")
            if key in predictions and (not isinstance(pred, str) or not pred.strip()):
                unparsable += 1
            captions[key] = pred if isinstance(pred, str) else ""
        result = caption_scores(captions, references, METRICS)
        # Extra, not headline: sacrebleu's BLEU and chrF on the raw text, every reference (13a tokens).
        extra_scores, signatures = sacrebleu_scores(captions, references)
        return Scores(metrics={**result.corpus, **extra_scores}, num_examples=len(references),
                      num_unparsable=unparsable,
                      extra={"per_example": result.per_example, "sacrebleu_signatures": signatures})

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int,
                   seed: int) -> None:
        write_coco_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
