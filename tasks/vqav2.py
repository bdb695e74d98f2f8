"""VQAv2: open-ended visual question answering on COCO, scored with the official VQA accuracy.

Recipe, prompt and splits are big_vision's `configs/proj/paligemma/transfers/vqav2.py` (sweep_best), as
summarised in docs/paligemma2-facts.md §2.1; the metric is metrics/vqa.py (docs/metric-facts.md §1).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from metrics.vqa import summarize, vqa_scores
from tasks import json_stream
from tasks.base import DataError, Example, Recipe, Scores, Task, field, paper_point, text
from tasks.builder import RawFilesBuilder

# --- the VQAv2 raw files --------------------------------------------------------------------------

SUBTYPES = {"train": "train2014", "validation": "val2014", "test": "test2015"}
MINIVAL_SIZE = 10240  # big_vision holds out the last 10,240 validation questions as minival (facts §2.1)

DOWNLOAD_INSTRUCTIONS = """\
VQAv2 needs the official question/annotation JSONs and the COCO images in the manual directory:
  from https://visualqa.org/download.html (VQA v2): Questions and Annotations for train and val, and the
  test questions, unzipped to
    v2_OpenEnded_mscoco_train2014_questions.json   v2_mscoco_train2014_annotations.json
    v2_OpenEnded_mscoco_val2014_questions.json     v2_mscoco_val2014_annotations.json
    v2_OpenEnded_mscoco_test2015_questions.json    (optional: only for the `test` role)
  from https://cocodataset.org/#download: train2014.zip, val2014.zip (and test2015.zip), unzipped to
    train2014/COCO_train2014_<12-digit id>.jpg, val2014/..., test2015/...
`paligemma-transfer` writes demo data in this layout with the task's write_demo."""


class VQAv2Builder(RawFilesBuilder):
    """One record per question: the COCO image (JPEG bytes as shipped, once per image), question, 10 answers,
    types."""

    name = "pgt_vqav2"
    RELEASE_NOTES = {"1.0.0": "Official VQAv2 JSONs + COCO images; test split only if its questions exist."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_INSTRUCTIONS
    # TFDS looks for a checksums file beside a packaged builder's code through `importlib_resources`, which
    # is not installed; a manual-download builder has no checksums, so it gets no code path.

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="VQAv2 open-ended questions on COCO images.",
            features=tfds.features.FeaturesDict({
                "question_id": np.int64,
                "image_id": np.int64,
                "image": tfds.features.Image(encoding_format="jpeg"),
                "question": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "answer_type": tfds.features.Text(),
                "question_type": tfds.features.Text(),
            }),
            homepage="https://visualqa.org/",
        )

    def _split_generators(self, dl_manager):
        splits = {}
        for split, subtype in SUBTYPES.items():
            if not self.wanted(split):
                continue
            questions = self._manual_dir / f"v2_OpenEnded_mscoco_{subtype}_questions.json"
            annotations = (None if split == "test"
                           else self._manual_dir / f"v2_mscoco_{subtype}_annotations.json")
            if split == "test" and not questions.is_file():
                continue  # the test questions are optional
            missing = [p for p in (questions, annotations) if p is not None and not p.is_file()]
            if missing:
                raise DataError(f"vqav2: {missing[0]} is missing.\n{DOWNLOAD_INSTRUCTIONS}")
            splits[split] = self._generate_examples(questions, annotations, subtype)
        return splits

    def _generate_examples(self, questions_path: Path, annotations_path: Path | None,
                           subtype: str) -> Iterator[tuple[str, dict]]:
        """The questions as they stream from the JSON (tasks/json_stream.py), each with its answers and its
        image file (stored once for all its questions, tasks/records.py)."""
        answers_of = _read_annotations(annotations_path) if annotations_path else {}
        image_dir = self._manual_dir / subtype
        seen_images: set[int] = set()
        count = 0
        for i, q in enumerate(json_stream.items(questions_path, "questions")):
            where = f"{questions_path}: questions[{i}]"
            question_id = field(q, "question_id", int, where)
            image_id = field(q, "image_id", int, where)
            if annotations_path and question_id not in answers_of:
                raise DataError(f"{where}: question_id {question_id} has no entry in {annotations_path}")
            answers, answer_type, question_type = answers_of.get(question_id, ((), "", ""))
            image = image_dir / f"COCO_{subtype}_{image_id:012d}.jpg"
            if image_id not in seen_images:
                if not image.is_file():
                    raise DataError(f"{where}: image {image} (image_id {image_id}) is missing")
                seen_images.add(image_id)
            count += 1
            yield str(question_id), {
                "question_id": question_id, "image_id": image_id, "image": image,
                "question": field(q, "question", str, where), "answers": list(answers),
                "answer_type": answer_type, "question_type": question_type}
        if not count:
            raise DataError(f"vqav2: {questions_path} has no questions")


def _read_annotations(path: Path) -> dict[int, tuple[tuple[str, ...], str, str]]:
    """question_id -> (10 answers, answer_type, question_type), streamed from the file; the strings are
    interned, since a few answers ("yes", "no", "2") make up most of them."""
    out = {}
    for i, ann in enumerate(json_stream.items(path, "annotations")):
        where = f"{path}: annotations[{i}]"
        answers = field(ann, "answers", list, where)
        out[field(ann, "question_id", int, where)] = (
            tuple(sys.intern(field(a, "answer", str, f"{where}.answers[{j}]")) for j, a in enumerate(answers)),
            sys.intern(field(ann, "answer_type", str, where)),
            sys.intern(field(ann, "question_type", str, where)),
        )
    return out


# --- the plugin -----------------------------------------------------------------------------------

class VQAv2(Task):
    name = "vqav2"
    description = "VQAv2 open-ended VQA on COCO; official VQA accuracy (minival, as the paper reports)."
    headline = "accuracy"
    version = 2  # bump with any change to prompt, parse, metric, recipe or demo data
    # big_vision's roles (facts §2.1): minival = the last 10,240 validation questions, train = train + the
    # rest of validation. The paper reports minival (Table 13), so `eval` is minival too.
    splits = {
        "train": f"train + validation[:-{MINIVAL_SIZE}]",
        "minival": f"validation[-{MINIVAL_SIZE}:]",
        "eval": f"validation[-{MINIVAL_SIZE}:]",
        "test": "test",
    }
    download_instructions = DOWNLOAD_INSTRUCTIONS

    def builder(self, manual_dir: str | Path, data_dir: str | Path) -> VQAv2Builder:
        return VQAv2Builder(manual_dir=manual_dir, data_dir=data_dir)

    def example(self, record: Mapping[str, Any]) -> Example:
        answers = tuple(text(a) for a in record["answers"])
        return Example(
            id=str(int(record["question_id"])),
            image=record["image"],  # decoded when read: references never decode it
            prefix=f"answer en {text(record['question'])}",  # facts §2.1
            targets=answers,  # all 10 (repeats weight frequent answers); the harness samples one per step
            reference={"answers": list(answers), "answer_type": text(record["answer_type"])},
        )

    def recipe(self, size: str, resolution: int) -> Recipe:
        """big_vision sweep_best (facts §2.1): 10 epochs, batch 256, lr 1e-5, wd 1e-6 at 224 and 0 at 448;
        text length 32; greedy decoding up to 32 tokens.

        The paper has no VQAv2 run at 896 (Table 13 stops at 448): 896 reuses the 448 recipe, the nearest
        published one. The lr is big_vision's; the paper's own sweep picks lower ones per size (Table 14:
        3e-6 / 1e-6 / 6e-7-1e-6 for 3B / 10B / 28B), which the grid's lr sweep over `lr_grid` reproduces.
        """
        _, res = paper_point(size, resolution)
        return Recipe(batch_size=256, epochs=10, lr=1e-5, weight_decay=1e-6 if res == 224 else 0.0,
                      text_len=32, decode="greedy", max_decode_len=32)

    def parse(self, text: str) -> str | None:
        """The decoded text as is (the metric does its own whitespace step); non-text is unparsable."""
        return text if isinstance(text, str) else None

    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        ids = list(references)
        for i in ids:
            if not references[i]["answers"]:
                raise DataError(f"vqav2: question {i} has no ground-truth answers (test annotations are not "
                                "public: submit test predictions to the evaluation server instead)")
        preds = [predictions.get(i, "") for i in ids]
        unparsable = sum(not isinstance(p, str) for p in preds)
        preds = [p if isinstance(p, str) else "" for p in preds]
        scores = vqa_scores(preds, [references[i]["answers"] for i in ids])
        metrics = summarize(scores, [references[i]["answer_type"] for i in ids])
        return Scores(metrics=metrics, num_examples=len(ids), num_unparsable=unparsable,
                      extra={"per_example": dict(zip(ids, scores))})

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        from tasks.demo.vqav2 import write_vqav2_demo

        write_vqav2_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
