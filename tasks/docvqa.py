"""DocVQA (single-page, RRC task 1): questions on scanned documents, scored with ANLS.

Recipe, prompt and splits are big_vision's `configs/proj/paligemma/transfers/docvqa.py` (sweep_best), as
summarised in docs/paligemma2-facts.md §2.2; the metric is metrics/anls.py (docs/metric-facts.md §2).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from metrics.anls import anls_bv_scores, anls_scores
from tasks.base import (
    DataError,
    Example,
    LazyExamples,
    Recipe,
    Scores,
    Task,
    field,
    ocr_example,
    paper_point,
    read_json,
    text,
)
from tasks.builder import RawFilesBuilder

SPLITS = ("train", "val", "test")

DOWNLOAD_INSTRUCTIONS = """\
DocVQA needs the RRC single-page DocVQA files (https://rrc.cvc.uab.es/?ch=17, Downloads, Task 1; also
https://www.docvqa.org) in the manual directory:
    train_v1.0_withQT.json   val_v1.0_withQT.json
    test_v1.0_withQT.json or test_v1.0.json          (optional: only for the `test` role)
    documents/<ucsf_document_id>_<page>.png         (the images the JSONs' "image" fields name)
Image paths are resolved relative to the folder holding each JSON, so the per-split layout
(train/train_v1.0_withQT.json + train/documents/...) works too.
`paligemma-transfer` writes demo data in this layout with the task's write_demo."""


def _qa_file(manual_dir: Path, split: str) -> Path | None:
    """The split's JSON in the flat RRC layout or in a per-split folder; None when absent. The RRC
    release names the test file without "_withQT" (it carries no question types), so both are accepted."""
    names = [f"{split}_v1.0_withQT.json"] + (["test_v1.0.json"] if split == "test" else [])
    for name in names:
        for candidate in (manual_dir / name, manual_dir / split / name):
            if candidate.is_file():
                return candidate
    return None


class DocVQABuilder(RawFilesBuilder):
    """One record per question: the page image (PNG bytes as shipped, once per page), question, answers,
    types."""

    name = "pgt_docvqa"
    RELEASE_NOTES = {"1.0.0": "RRC *_v1.0_withQT.json + document images; test split only if present."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_INSTRUCTIONS
    # TFDS looks for a checksums file beside a packaged builder's code through `importlib_resources`, which
    # is not installed; a manual-download builder has no checksums, so it gets no code path.

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="DocVQA single-page questions on industry documents (RRC task 1).",
            features=tfds.features.FeaturesDict({
                "question_id": np.int64,
                "doc_id": np.int64,
                "image": tfds.features.Image(encoding_format="png"),
                "question": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "question_types": tfds.features.Sequence(tfds.features.Text()),
            }),
            homepage="https://www.docvqa.org/",
        )

    def _split_generators(self, dl_manager):
        splits = {}
        for split in SPLITS:
            if not self.wanted(split):
                continue
            path = _qa_file(self._manual_dir, split)
            if path is None and split == "test":
                continue  # the test questions are optional
            if path is None:
                raise DataError(f"docvqa: {self._manual_dir / f'{split}_v1.0_withQT.json'} is missing.\n"
                                f"{DOWNLOAD_INSTRUCTIONS}")
            records = field(read_json(path), "data", list, str(path))
            if not records:  # TFDS cannot write an empty split
                raise DataError(f"docvqa: {path} has no questions")
            splits[split] = self._generate_examples(path, records, with_answers=split != "test")
        return splits

    def _generate_examples(self, path: Path, records: list, with_answers: bool) -> Iterator[tuple[str, dict]]:
        for i, r in enumerate(records):
            where = f"{path}: data[{i}]"
            question_id = field(r, "questionId", int, where)
            answers = field(r, "answers", list, where) if with_answers else []
            question_types = field(r, "question_types", list, where) if "question_types" in r else []
            image = path.parent / field(r, "image", str, where)
            if not image.is_file():
                raise DataError(f"{where}: image {image} (questionId {question_id}) is missing")
            yield str(question_id), {
                "question_id": question_id,
                "doc_id": field(r, "docId", int, where),
                "image": image,  # the file: stored once for all its questions (tasks/records.py)
                "question": field(r, "question", str, where),
                "answers": [_string(a, f"{where}.answers[{j}]") for j, a in enumerate(answers)],
                "question_types": [_string(t, f"{where}.question_types[{j}]")
                                   for j, t in enumerate(question_types)],
            }


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: expected a string, got {type(value).__name__}")
    return value


class DocVQA(Task):
    name = "docvqa"
    description = "DocVQA single-page document VQA (RRC); ANLS on val, as the paper reports."
    headline = "anls"
    # Bump with any change to prompt, parse, metric, recipe or demo data (2: demo text drawn for 32 / 64 px;
    # 3: two fields per page, values in large type after small keys).
    version = 4  # the paper's soft-caps, antialias and sweep fields in the recipe; prepared once per image
    # big_vision's roles (facts §2.2): minival = the last 5% of train; the paper reports val (Table 13).
    splits = {"train": "train[:-5%]", "minival": "train[-5%:]", "eval": "val", "test": "test"}
    download_instructions = DOWNLOAD_INSTRUCTIONS

    def builder(self, manual_dir: str | Path, data_dir: str | Path) -> DocVQABuilder:
        return DocVQABuilder(manual_dir=manual_dir, data_dir=data_dir)

    def example(self, record: Mapping[str, Any]) -> Example:
        answers = tuple(text(a) for a in record["answers"])
        return Example(
            id=str(int(record["question_id"])),
            image=record["image"],  # decoded when read: references never decode it
            prefix=text(record["question"]),  # the raw question, no "answer en" (facts §2.2)
            targets=answers,  # the harness samples one per step, as big_vision's `choice`
            reference={"answers": list(answers)},
        )

    def ocr_examples(self, manual_dir: str | Path, role: str = "train") -> LazyExamples:
        """Each page of the role's RRC file that has a release OCR file (`ocr_results/<page>.json`, as the
        RRC download ships), with the OCR lines top to bottom as the target. Read from the raw files:
        the TFDS records are per question, not per page."""
        manual_dir = Path(manual_dir)
        split = {"minival": "train", "eval": "val"}.get(role, role)
        path = _qa_file(manual_dir, split)
        if path is None:
            raise DataError(f"docvqa: {manual_dir / f'{split}_v1.0_withQT.json'} is missing.\n"
                            f"{DOWNLOAD_INSTRUCTIONS}")
        pages: dict[str, list[str]] = {}
        for i, r in enumerate(field(read_json(path), "data", list, str(path))):
            image = field(r, "image", str, f"{path}: data[{i}]")
            ocr = path.parent / "ocr_results" / (Path(image).stem + ".json")
            if image in pages or not ocr.is_file():
                continue
            results = field(read_json(ocr), "recognitionResults", list, str(ocr))
            pages[image] = [field(line, "text", str, str(ocr)) for page in results
                            for line in field(page, "lines", list, str(ocr))]

        def make(image: str) -> Example:
            with Image.open(path.parent / image) as page:
                pixels = np.asarray(page.convert("RGB"))
            return ocr_example(Example(Path(image).stem, pixels, "", (), None), pages[image])

        return LazyExamples(sorted(pages), make)

    def recipe(self, size: str, resolution: int) -> Recipe:
        """big_vision sweep_best (facts §2.2), the same at 224, 448 and 896: 10 epochs, batch 256,
        lr 1e-5, wd 1e-6; text length 32; greedy decoding up to 32 tokens.

        The lr is big_vision's; the paper's own sweep picks lower ones per size (Table 14: 6e-6 / 3e-6 /
        3e-6 for 3B / 10B / 28B), which the grid's lr sweep over `lr_grid` reproduces.
        """
        paper_point(size, resolution)  # validates the size and resolution; the recipe is the same
        return Recipe(batch_size=256, epochs=10, lr=1e-5, weight_decay=1e-6, text_len=32, decode="greedy",
                      max_decode_len=32)

    def parse(self, text: str) -> str | None:
        """The decoded text as is: ANLS normalizes, and the RRC script measures the raw length; non-text
        is unparsable."""
        return text if isinstance(text, str) else None

    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        ids = list(references)
        for i in ids:
            if not references[i]["answers"]:
                raise DataError(f"docvqa: question {i} has no ground-truth answers (test answers are not "
                                "public: submit test predictions to the RRC evaluation server instead)")
        preds = [predictions.get(i, "") for i in ids]
        unparsable = sum(not isinstance(p, str) for p in preds)
        preds = [p if isinstance(p, str) else "" for p in preds]
        answers = [references[i]["answers"] for i in ids]
        rrc, bv = anls_scores(preds, answers), anls_bv_scores(preds, answers)
        n = len(ids)
        metrics = {"anls": sum(rrc) / n if n else 0.0, "anls_bv": sum(bv) / n if n else 0.0}
        return Scores(metrics=metrics, num_examples=n, num_unparsable=unparsable,
                      extra={"per_example": dict(zip(ids, rrc))})

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        from tasks.demo.docvqa import write_docvqa_demo

        write_docvqa_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
