"""ChemDraw molecule recognition: a molecule drawing -> its SMILES, scored with MolScribe's exact match.

Recipe from the paper's App. B (docs/paligemma2-facts.md §2.6); big_vision has no config for it. The metric is
metrics/smiles.py (MolScribe's `canon_smiles`, docs/metric-facts.md §5), the number Table 4 compares.

Raw files follow MolScribe's `data/` folder, which is the manual directory:
- `synthetic/chemdraw.csv` (columns image_id, file_path, SMILES; file_path relative to the manual dir) and
  its PNGs: the 5,719-image ChemDraw benchmark, the eval split.
- `pubchem/train_pubchem.csv`: the training molecules (a SMILES column). MolScribe and the paper render
  these on the fly (the paper with Indigo, 1M PubChem molecules). The prepared dataset holds one RDKit
  drawing per molecule (seeded by the CSV line and the SMILES, so a rebuild gives the same pixels; minival
  is scored on it); training redraws every molecule per (seed, step, row) through `train_image`
  (tasks/chemdraw_drawing.py `render`: Indigo or RDKit, MolScribe-style augmentation). A row that has a
  file_path uses that image instead, never redrawn. Rows RDKit cannot parse are skipped (the paper
  removes corrupted ground truth).
The target is RDKit's canonical SMILES of the molecule (the CSV text where RDKit cannot parse it): one
spelling per molecule is easier to learn than whatever order the source wrote. Images are padded to a
square with white before resizing, as the paper says.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from rdkit import Chem, rdBase

from metrics.smiles import smiles_scores
from tasks.base import DataError, Example, Recipe, Scores, Task, image_source, paper_point, text
from tasks.builder import RawFilesBuilder
from tasks.chemdraw_drawing import TEST_CSV, TRAIN_CSV, render, render_smiles
from tasks.demo.chemdraw import write_demo
from tasks.protocol import family_resolution

# Unpublished (facts §2.6); the output format's name, in the style of PaliGemma's short task prompts.
PREFIX = "smiles"

DOWNLOAD_INSTRUCTIONS = f"""\
ChemDraw needs MolScribe's data folder (https://github.com/thomas0809/MolScribe, README "Data") as the
manual directory:
    {TEST_CSV} + synthetic/chemdraw/*.png
        from https://huggingface.co/yujieq/MolScribe/blob/main/synthetic.zip
    {TRAIN_CSV}
        from the PubChem archive the README links (pubchem.zip)
Training images are rendered from the SMILES while the dataset is built (RDKit; about an hour per 1M).
`paligemma-transfer` writes demo data in this layout with the task's write_demo."""

# facts §2.6: 30k steps, batch 256, lr 1e-4, label smoothing 0.1, max output 256, images padded square.
STEPS = 30_000
BATCH_SIZE = 256
LR = 1e-4
# The paper gives one lr for molecules and no sweep (App. B): the grid is that lr alone.
LR_GRID = (1e-4,)
# Reported at 448 px, 10B (Table 4; "896 did not improve"): where the recipe was tuned.
SWEEP_RESOLUTION = 448
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LABEL_SMOOTHING = 0.1
MAX_OUTPUT = 256
TEXT_LEN = MAX_OUTPUT + 8  # + prefix and separator ("smiles\n" is 2-3 Gemma tokens)


def target_smiles(smiles: str) -> str:
    """RDKit's canonical SMILES, stereo kept; the input itself where RDKit cannot parse it."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    return Chem.MolToSmiles(mol) if mol is not None else smiles


def read_csv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header, checked: errors name the file, line and column."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}:1: missing column(s) {missing}; header is {header}")
            for row in reader:
                extras = row.pop(None, None)  # DictReader puts surplus fields under None, pads with None
                if extras is not None or None in row.values():
                    got = len(header) + len(extras) if extras else sum(v is not None for v in row.values())
                    raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields "
                                    f"({','.join(header)}), got {got}")
                yield reader.line_num, row
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV line: {e}") from None


class ChemDrawBuilder(RawFilesBuilder):
    """One record per molecule: the drawing (PNG), its id (the CSV's file_path) and SMILES."""

    name = "pgt_chemdraw"
    RELEASE_NOTES = {"1.0.0": "MolScribe's chemdraw.csv benchmark (test) + PubChem SMILES rendered (train)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_INSTRUCTIONS
    # TFDS looks for a checksums file beside a packaged builder's code through `importlib_resources`, which
    # is not installed; a manual-download builder has no checksums, so it gets no code path.

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Molecule drawings with their SMILES: ChemDraw benchmark (test), PubChem (train).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="png"),
                "image_id": tfds.features.Text(),
                "smiles": tfds.features.Text(),
            }),
            homepage="https://github.com/thomas0809/MolScribe",
        )

    def _split_generators(self, dl_manager):
        paths = {"train": self._manual_dir / TRAIN_CSV, "test": self._manual_dir / TEST_CSV}
        paths = {split: path for split, path in paths.items() if self.wanted(split)}
        for path in paths.values():
            if not path.is_file():
                raise DataError(f"chemdraw: {path} is missing.\n{DOWNLOAD_INSTRUCTIONS}")
        required = {"train": ("SMILES",), "test": ("file_path", "SMILES")}
        return {split: self._generate_examples(path, required[split]) for split, path in paths.items()}

    def _generate_examples(self, path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
        yielded = 0
        for line, row in read_csv(path, required):
            smiles = row["SMILES"]
            if row.get("file_path"):
                image = self._manual_dir / row["file_path"]
                if not image.is_file():
                    raise DataError(f"{path}:{line}: image {image} is missing")
                source = image_source(image, "png")
                image_id = row["file_path"]
            else:
                png = render_smiles(smiles, seed=(line, zlib.crc32(smiles.encode())))
                if png is None:
                    continue
                source = io.BytesIO(png)
                image_id = row.get("image_id") or f"{path.name}:{line}"
            yield str(line), {"image": source, "image_id": image_id, "smiles": smiles}
            yielded += 1
        if not yielded:  # TFDS cannot write an empty split
            raise DataError(f"{path}: no usable rows (training rows need a SMILES RDKit can parse)")


class ChemDraw(Task):
    name = "chemdraw"
    description = ("Molecule recognition: ChemDraw drawings (MolScribe's benchmark) -> SMILES; MolScribe's "
                   "canon_smiles exact match.")
    headline = "canon_smiles"
    # Bump with any change to prompt, parse, metric, recipe or demo data (2: the paper's single lr, its sweep
    # resolution, the paper's soft-caps, training images redrawn per step).
    version = 2
    # The benchmark is the eval (and test) split; 1% of the training molecules are held out as minival
    # for lr checks (MolScribe validates on another benchmark; the paper names no minival).
    splits = {"train": "train[:99%]", "minival": "train[99%:]", "eval": "test", "test": "test"}
    download_instructions = DOWNLOAD_INSTRUCTIONS

    def builder(self, manual_dir: str | Path, data_dir: str | Path) -> ChemDrawBuilder:
        return ChemDrawBuilder(manual_dir=manual_dir, data_dir=data_dir)

    def example(self, record: Mapping[str, Any]) -> Example:
        smiles = text(record["smiles"])
        return Example(id=text(record["image_id"]), image=np.asarray(record["image"]), prefix=PREFIX,
                       targets=(target_smiles(smiles),), reference={"smiles": smiles})

    def recipe(self, size: str, resolution: int) -> Recipe:
        """One recipe for every size and resolution (facts §2.6; the paper found 448 best and 896 no
        better). Weight decay and dropout: unstated, so big_vision's transfer default of 0; greedy."""
        paper_point(size, resolution)  # validates; the recipe is the same at every point
        return Recipe(batch_size=BATCH_SIZE, steps=STEPS, lr=LR, lr_grid=LR_GRID,
                      label_smoothing=LABEL_SMOOTHING, text_len=TEXT_LEN, max_decode_len=MAX_OUTPUT,
                      pad_to_square=True, sweep_resolution=family_resolution(SWEEP_RESOLUTION, resolution))

    def train_image(self, example: Example, seed: int | tuple[int, ...]) -> np.ndarray | None:
        """A fresh drawing of a training molecule for this (seed, step, row), or None to keep the stored
        image: rows whose id is an image file (the CSV's file_path) are never redrawn, and neither is a
        SMILES no toolkit can read. The data pipeline calls it per training row."""
        if example.id.lower().endswith(IMAGE_SUFFIXES):
            return None
        return render(example.reference["smiles"], seed)

    def parse(self, text: str) -> str:
        """The decoded text, stripped; the metric decides what parses as a molecule."""
        return text.strip() if isinstance(text, str) else ""

    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        ids = list(references)
        preds = [predictions.get(i, "") for i in ids]
        preds = [p if isinstance(p, str) else "" for p in preds]
        result = smiles_scores(preds, [references[i]["smiles"] for i in ids])
        unparsable = sum(not ok for ok in result.pred_parsed)  # MolScribe's pred_valid, counted
        return Scores(metrics=result.metrics, num_examples=len(ids), num_unparsable=unparsable,
                      extra={"per_example": dict(zip(ids, result.matches))})

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        write_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
