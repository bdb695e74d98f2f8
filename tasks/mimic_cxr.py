"""MIMIC-CXR report generation: INDICATION in, FINDINGS + IMPRESSION out (PaliGemma 2 §4.8, Table 8).

Recipe: docs/paligemma2-facts.md §2.6 (App. B). Metrics: CIDEr, BLEU-4, ROUGE-L through pycocoevalcap
(metric-facts §3, "MIMIC-CXR") and RadGraph F1 (metric-facts §6, metrics/radgraph.py).

Reproduction decisions the paper leaves open, made here:
- Splits: the official `mimic-cxr-2.0.0-split.csv` (train / validate / test); the paper uses Tanno
  et al.'s splits, which are not public, and removes mentions of prior studies with Gemini 1.5 Pro,
  which we do not do.
- One image per study, the study's first PA view in split-CSV order, else its first AP view, else
  its first image: report generation conditions on one frontal radiograph, as Flamingo-CXR does.
- Prompt: the INDICATION section's text itself (whitespace collapsed), with HISTORY / REASON FOR
  EXAM and similar headers standing in when INDICATION is absent; empty when a report has none.
- Target: the FINDINGS text, a space, then the IMPRESSION text, without the headers (headers would
  be free n-gram matches); a report with neither section is skipped.
- Lengths: text_len 256 and at most 256 decoded tokens (a typical findings + impression is
  100-200 Gemma tokens; the indication ~20).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from metrics import radgraph
from metrics.captioning import caption_scores
from metrics.sacrebleu_metrics import sacrebleu_scores
from model.config import config_for
from tasks.base import DataError, Example, Recipe, Scores, Task, text
from tasks.builder import RawFilesBuilder
from tasks.demo.mimic_cxr import write_mimic_demo

log = logging.getLogger(__name__)

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLITS = ("train", "validate", "test")
VIEW_PREFERENCE = ("PA", "AP")
MAX_IMAGE_SIDE = 1024  # real images are ~2500 x 3000 px; the largest model input is 896 px
CAPTION_METRICS = ("cider", "bleu4", "rouge_l")  # Table 8 reports these three and RadGraph F1
# §2.6: lr 5e-6 at 448, re-swept over {0.03, 0.1, 0.3, 1.0, 5.0} x 1e-4 for other sizes and
# resolutions; the grid holds both.
LR_GRID = (3e-6, 5e-6, 1e-5, 3e-5, 1e-4, 5e-4)

DOWNLOAD_INSTRUCTIONS = """\
MIMIC-CXR needs (credentialed PhysioNet access), in the manual directory:
  files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg
      from MIMIC-CXR-JPG 2.0.0 (https://physionet.org/content/mimic-cxr-jpg/2.0.0/)
  files/pXX/pNNNNNNNN/sNNNNNNNN.txt
      the free-text reports, mimic-cxr-reports.zip from MIMIC-CXR 2.0.0
      (https://physionet.org/content/mimic-cxr/2.0.0/), unzipped into the same files/ tree
  mimic-cxr-2.0.0-split.csv.gz and mimic-cxr-2.0.0-metadata.csv.gz (from MIMIC-CXR-JPG; plain
      .csv works too)
Studies whose report or images are missing are skipped (a partial image download is fine).
RadGraph F1 on real reports needs the `radgraph` package and its model weights on disk (see
metrics/radgraph.py); without them the built-in lexicon annotator is used, which fits demo data only."""

# --- reports -----------------------------------------------------------------------------------

_SECTION_OF = {
    **dict.fromkeys(("INDICATION", "INDICATIONS", "CLINICAL INDICATION", "HISTORY",
                     "CLINICAL HISTORY", "REASON FOR EXAM", "REASON FOR EXAMINATION",
                     "CLINICAL INFORMATION"), "indication"),
    **dict.fromkeys(("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION"), "findings"),
    **dict.fromkeys(("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"), "impression"),
}
# A header is a label at the start of a line followed by ":". Known labels match in any case; other
# all-caps labels (EXAMINATION, TECHNIQUE, COMPARISON, WET READ, ...) only end the section before.
_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z /&()]*?)[ \t]*:", re.M)


def parse_sections(report: str) -> dict[str, str]:
    """{"indication", "findings", "impression"} -> section text, whitespace collapsed ("" if absent).

    A section that appears twice (e.g. in an addendum) is concatenated.
    """
    headers = []
    for m in _HEADER.finditer(report):
        label = " ".join(m.group(1).split())
        if label.upper() in _SECTION_OF or (label.isupper() and len(label.replace(" ", "")) >= 4):
            headers.append((m, _SECTION_OF.get(label.upper())))
    found: dict[str, list[str]] = {"indication": [], "findings": [], "impression": []}
    for (m, section), following in zip(headers, headers[1:] + [(None, None)]):
        if section:
            end = following[0].start() if following[0] else len(report)
            found[section].append(report[m.end():end])
    return {k: " ".join(" ".join(v).split()) for k, v in found.items()}


def report_target(findings: str, impression: str) -> str:
    return " ".join(s for s in (findings, impression) if s)


# --- CSV files ---------------------------------------------------------------------------------

def _csv_path(manual_dir: Path, name: str) -> Path:
    for candidate in (manual_dir / f"{name}.gz", manual_dir / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{manual_dir / name}(.gz) is missing.\n{DOWNLOAD_INSTRUCTIONS}")


def read_csv(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; errors name the file, the line and what was expected."""
    try:
        with (gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz"
              else open(path, encoding="utf-8", newline="")) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            missing = [c for c in required if c not in (header or [])]
            if missing:
                raise DataError(f"{path}:1: the header lacks column(s) {missing}; expected "
                                f"{list(required)} among {header}")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields "
                                    f"({','.join(header)}), got {len(row)}: {row!r}")
                yield reader.line_num, dict(zip(header, row))
    except (csv.Error, UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable CSV ({e})") from None


@dataclass
class _Study:
    study_id: str
    subject_id: str
    split: str
    dicoms: list[str]


def read_studies(manual_dir: Path) -> dict[str, list[_Study]]:
    """Studies per official split, in split-CSV order, with their images in that order."""
    path = _csv_path(manual_dir, SPLIT_FILE)
    studies: dict[str, _Study] = {}
    for line, row in read_csv(path, ("dicom_id", "study_id", "subject_id", "split")):
        if row["split"] not in SPLITS or not row["study_id"].isdigit() \
                or not row["subject_id"].isdigit() or not row["dicom_id"]:
            raise DataError(f"{path}:{line}: expected a dicom_id, numeric study_id and subject_id "
                            f"and a split in {SPLITS}, got {row}")
        study = studies.setdefault(row["study_id"], _Study(row["study_id"], row["subject_id"],
                                                           row["split"], []))
        if (study.split, study.subject_id) != (row["split"], row["subject_id"]):
            raise DataError(f"{path}:{line}: study {study.study_id} was listed with subject "
                            f"{study.subject_id} in split {study.split!r}, now {row}")
        study.dicoms.append(row["dicom_id"])
    by_split: dict[str, list[_Study]] = {s: [] for s in SPLITS}
    for study in studies.values():
        by_split[study.split].append(study)
    return by_split


def read_views(manual_dir: Path) -> dict[str, str]:
    path = _csv_path(manual_dir, METADATA_FILE)
    return {row["dicom_id"]: row["ViewPosition"]
            for _, row in read_csv(path, ("dicom_id", "ViewPosition"))}


def study_folder(manual_dir: Path, subject_id: str, study_id: str) -> Path:
    return manual_dir / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def choose_image(study: _Study, views: Mapping[str, str], folder: Path) -> tuple[str, str] | None:
    """(dicom_id, view) of the first PA image, else the first AP, else the first; None if none
    of the study's images is on disk."""
    present = [d for d in study.dicoms if (folder / f"{d}.jpg").is_file()]
    for preferred in VIEW_PREFERENCE:
        for dicom in present:
            if views.get(dicom) == preferred:
                return dicom, preferred
    return (present[0], views.get(present[0], "")) if present else None


def _image(path: Path) -> Path | io.BytesIO:
    """The JPEG as stored, or re-encoded at MAX_IMAGE_SIDE on the long side when it is larger."""
    from PIL import Image

    with Image.open(path) as image:
        if max(image.size) <= MAX_IMAGE_SIDE:
            return path
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
    buffer.seek(0)
    return buffer


# --- TFDS --------------------------------------------------------------------------------------

class MimicCxrBuilder(RawFilesBuilder):
    """One record per study: one frontal image and the report's sections."""

    name = "pgt_mimic_cxr"
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "subject_id": tfds.features.Text(),
            "dicom_id": tfds.features.Text(),
            "view_position": tfds.features.Text(),
            "image": tfds.features.Image(encoding_format="jpeg"),
            "indication": tfds.features.Text(),
            "findings": tfds.features.Text(),
            "impression": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        manual_dir = Path(dl_manager.manual_dir)
        by_split, views = read_studies(manual_dir), read_views(manual_dir)
        usable = {split: self._usable(manual_dir, studies, views)
                  for split, studies in by_split.items()}
        if not any(usable.values()):
            raise DataError(f"{manual_dir}: no study has both its report and an image on disk, "
                            f"e.g. {_example_paths(manual_dir, by_split)}.\n{DOWNLOAD_INSTRUCTIONS}")
        return {split: self._generate_examples(manual_dir, records)
                for split, records in usable.items() if records}

    def _usable(self, manual_dir: Path, studies: list[_Study], views: Mapping[str, str]):
        records, skipped = [], []
        for study in studies:
            folder = study_folder(manual_dir, study.subject_id, study.study_id)
            report = folder.with_suffix(".txt")
            chosen = choose_image(study, views, folder) if report.is_file() else None
            sections = parse_sections(report.read_text(encoding="utf-8")) if chosen else None
            if not chosen or not report_target(sections["findings"], sections["impression"]):
                skipped.append(report)
                continue
            records.append((study, folder, chosen, sections))
        if skipped:
            log.warning("MIMIC-CXR: skipped %d of %d studies without a report, an image on disk or "
                        "a FINDINGS/IMPRESSION section, e.g. %s", len(skipped), len(studies),
                        skipped[0])
        return records

    def _generate_examples(self, manual_dir: Path, records):
        for study, folder, (dicom, view), sections in records:
            yield study.study_id, {
                "id": study.study_id, "subject_id": study.subject_id, "dicom_id": dicom,
                "view_position": view, "image": _image(folder / f"{dicom}.jpg"), **sections}


def _example_paths(manual_dir: Path, by_split: Mapping[str, list[_Study]]) -> str:
    study = next((s for studies in by_split.values() for s in studies), None)
    if study is None:
        return f"{SPLIT_FILE} lists no study"
    folder = study_folder(manual_dir, study.subject_id, study.study_id)
    return f"{folder.with_suffix('.txt')} and {folder / (study.dicoms[0] + '.jpg')}"


# --- the task ----------------------------------------------------------------------------------

class MimicCxr(Task):
    name = "mimic_cxr"
    description = "MIMIC-CXR report generation (INDICATION -> FINDINGS + IMPRESSION), RadGraph F1"
    headline = radgraph.HEADLINE
    version = 2  # bump with any change to prompt, parse, metric, recipe or demo data (2: swept per point)
    splits = {"train": "train", "minival": "validate", "eval": "test", "test": "test"}
    download_instructions = DOWNLOAD_INSTRUCTIONS

    def __init__(self, annotator: str | radgraph.Annotator = "auto"):
        """`annotator`: "auto" (the RadGraph model when its weights are on disk, else the
        lexicon), "model", "lexicon", or any callable texts -> annotations."""
        self._annotator_choice = annotator
        self._annotator: radgraph.Annotator | None = None

    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        return MimicCxrBuilder(data_dir=str(data_dir))

    def example(self, record: Mapping[str, Any]) -> Example:
        target = report_target(text(record["findings"]), text(record["impression"]))
        return Example(id=text(record["id"]), image=record["image"],
                       prefix=text(record["indication"]), targets=(target,), reference=target)

    def recipe(self, size: str, resolution: int) -> Recipe:
        # One recipe for every size and resolution, nano ones included: the paper gives only this
        # one and re-sweeps the lr (LR_GRID). config_for raises a KeyError naming what exists.
        config_for(size, resolution)
        # §2.6: 8 epochs, lr 5e-6, no label smoothing, dropout or weight decay, greedy decoding.
        # The batch size is not given; 256 is what the other App. B transfers use. The lr was chosen at
        # 448 px and "re-swept" for the other sizes and resolutions: a sweep at every point.
        return Recipe(batch_size=256, epochs=8, lr=5e-6, lr_grid=LR_GRID, weight_decay=0.0,
                      label_smoothing=0.0, dropout=0.0, text_len=256, decode="greedy",
                      max_decode_len=256, sweep_resolution=resolution, sweep_per_point=True)

    def parse(self, text: str) -> str | None:
        """The report, whitespace collapsed; None (a miss) for output that is not text."""
        return " ".join(text.split()) if isinstance(text, str) else None

    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        """A missing prediction is scored as an empty report; so is an empty or non-text one,
        which is also counted unparsable."""
        extra = [k for k in predictions if k not in references]
        if extra:
            raise ValueError(f"{len(extra)} prediction id(s) are not in the references, e.g. "
                             f"{extra[:3]}")
        reports, unparsable = {}, 0
        for key in references:
            pred = predictions.get(key, "")
            if key in predictions and (not isinstance(pred, str) or not pred.strip()):
                unparsable += 1
            reports[key] = pred if isinstance(pred, str) else ""
        captions = caption_scores(reports, {k: [r] for k, r in references.items()}, CAPTION_METRICS)
        annotator = self.annotator()
        graphs = radgraph.radgraph_scores(reports, dict(references), annotator)
        per_example = {k: {**captions.per_example[k], **graphs.per_example[k]} for k in references}
        # Extra, not headline: sacrebleu's BLEU and chrF on the raw report text (13a tokens).
        extra_scores, signatures = sacrebleu_scores(reports, {k: [r] for k, r in references.items()})
        return Scores(metrics={**captions.corpus, **graphs.corpus, **extra_scores}, num_examples=len(references),
                      num_unparsable=unparsable,
                      extra={"per_example": per_example, "sacrebleu_signatures": signatures,
                             "radgraph_annotator": getattr(annotator, "description",
                                                           repr(annotator))})

    def annotator(self) -> radgraph.Annotator:
        """The RadGraph annotator, resolved once (the model takes seconds to load)."""
        if self._annotator is None:
            choice = self._annotator_choice
            if choice == "auto":
                choice = "model" if radgraph.radgraph_model_available() else "lexicon"
                if choice == "lexicon":
                    log.warning("RadGraph model weights not found: RadGraph F1 uses the lexicon "
                                "annotator, which is meant for demo reports only")
            if choice == "model":
                self._annotator = radgraph.RadGraphModelAnnotator()
            elif choice == "lexicon":
                self._annotator = radgraph.LexiconAnnotator()
            elif callable(choice):
                self._annotator = choice
            else:
                raise ValueError(f"annotator must be 'auto', 'model', 'lexicon' or a callable, "
                                 f"got {choice!r}")
        return self._annotator

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int,
                   seed: int) -> None:
        write_mimic_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
