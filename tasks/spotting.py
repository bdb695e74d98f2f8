"""Text-spotting sources beside ICDAR'15, read from their official raw formats: Total-Text (polygon .txt
files), HierText (the gzipped JSON of `gt/`) and TextOCR (its JSON of imgs / anns / imgToAnns).

The paper's text-spotting model trains on a mixture of the train splits of ICDAR'15, Total-Text, MLT17,
MLT19, HierText, TextOCR and IntelOCR, and is evaluated on ICDAR'15 and Total-Text (App. B, Table 2;
docs/paligemma2-facts.md §2.6). Every source here becomes one record per image: the image, its id and its
words as JSON, [{"polygon": [x1, y1, ..., xn, yn], "text": ...}] in pixels, `###` for don't-care words
(Total-Text's `#`, HierText's illegible words, TextOCR's `.`).

Target format: one for the whole mixture, ICDAR'15's (tasks/icdar15.py): a word of n > 4 vertices (Total-
Text's curved polygons, HierText's) is written as the 4 corners of its minimum rotated rectangle, a
reproduction decision (the paper gives no format); scoring keeps the full ground-truth polygon.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from metrics.text_spotting import DONT_CARE
from tasks.base import DataError, Example, field, read_json, text
from tasks.builder import RawFilesBuilder
from tasks.icdar15 import PREFIX, format_target

Word = tuple[list[float], str]


def corner_quad(polygon: Sequence[float]) -> np.ndarray:
    """A polygon's 4 target corners: itself when it has 4 vertices, else its minimum rotated rectangle,
    clockwise from the corner nearest the top-left (ICDAR'15's order)."""
    points = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(points) != 4:
        from shapely.geometry import MultiPoint

        rect = MultiPoint([tuple(p) for p in points]).minimum_rotated_rectangle
        coords = np.asarray(getattr(rect, "exterior", rect).coords, np.float64)[:4]
        points = coords if len(coords) == 4 else np.repeat(coords[:1], 4, axis=0)
        start = int(np.argmin(points.sum(axis=1)))
        points = np.roll(points, -start, axis=0)
        # Clockwise in image coordinates (y down) means a positive shoelace sum.
        x, y = points[:, 0], points[:, 1]
        if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:
            points = np.concatenate([points[:1], points[1:][::-1]])
    return points.reshape(-1)


def spotting_example(image_id: str, image: np.ndarray, words: list[dict[str, Any]]) -> Example:
    """An Example in ICDAR'15's target format and reference shape (`quad` holds the full polygon)."""
    height, width = image.shape[:2]
    quads = np.asarray([corner_quad(w["polygon"]) for w in words], np.float32).reshape(-1, 8)
    texts = [w["text"] for w in words]
    reference = {"width": int(width), "height": int(height),
                 "words": [{"quad": [float(c) for c in w["polygon"]], "text": w["text"]} for w in words]}
    return Example(id=image_id, image=image, prefix=PREFIX, targets=(format_target(quads, texts, width, height),),
                   reference=reference)


class WordsBuilder(RawFilesBuilder):
    """One record per image: the image, its id and its words as JSON. `READERS` maps each split to a
    function (manual dir) -> iterator of (image id, image file or bytes, words)."""

    READERS: Mapping[str, Callable[[Path], Iterator[tuple[str, Any, list[Word]]]]] = {}
    RELEASE_NOTES = {"1.0.0": "Images with word polygons and transcriptions (don't-care as ###)."}

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "image_id": tfds.features.Text(),
            "words": tfds.features.Text(),  # [{"polygon": [...], "text": ...}] as JSON
        }))

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(manual, reader) for split, reader in self.READERS.items()}

    def _generate_examples(self, manual_dir: Path, reader):
        for image_id, image, words in reader(manual_dir):
            yield image_id, {"image": image, "image_id": image_id,
                             "words": json.dumps([{"polygon": p, "text": t} for p, t in words], ensure_ascii=False)}


def record_example(record: Mapping[str, Any]) -> Example:
    """A WordsBuilder record -> Example."""
    return spotting_example(text(record["image_id"]), np.asarray(record["image"]), json.loads(text(record["words"])))


def _images(folder: Path, where: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{where}: image folder {folder} is missing")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")}


# --- Total-Text ---------------------------------------------------------------------------------------
# Groundtruth/Text's txt_format.zip: one poly_gt_<image>.txt per image, a record per word, sometimes
# wrapped over several lines:
#   x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'm'], transcriptions: [u'NAUGHTY']
TOTALTEXT_GT_ROOTS = ("Txt_format", "txt_format", "Groundtruth/Text/Txt_format")
_TT_RECORD = re.compile(r"x:\s*\[\[([^\]]*)\]\],\s*y:\s*\[\[([^\]]*)\]\],\s*ornt:\s*\[u?(['\"])(.*?)\3\],\s*"
                        r"transcriptions:\s*\[u?(['\"])(.*?)\5\]\s*$", re.S)


def read_totaltext_gt(content: str, source: str) -> list[Word]:
    """One poly_gt file -> [(polygon, text)]; `#` (don't care) becomes `###`."""
    words, record, start = [], "", 0
    for lineno, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        if not record:
            start = lineno
        record = f"{record} {line.strip()}" if record else line.strip()
        if not record.rstrip().endswith("]"):
            continue
        m = _TT_RECORD.match(record)
        if m is None:
            if "transcriptions:" in record:
                raise DataError(f"{source}:{start}: expected x: [[...]], y: [[...]], ornt: [u'.'], "
                                f"transcriptions: [u'...'], got {record[:120]!r}")
            continue
        xs, ys = [float(v) for v in m.group(1).split()], [float(v) for v in m.group(2).split()]
        if len(xs) != len(ys) or len(xs) < 3:
            raise DataError(f"{source}:{start}: {len(xs)} x and {len(ys)} y coordinates; a polygon needs "
                            "as many of each, at least 3")
        transcription = m.group(6)
        words.append(([c for xy in zip(xs, ys) for c in xy], DONT_CARE if transcription == "#" else transcription))
        record = ""
    if record:
        raise DataError(f"{source}:{start}: unfinished record {record[:120]!r}")
    return words


def _totaltext_reader(folder: str) -> Callable[[Path], Iterator[tuple[str, Any, list[Word]]]]:
    def read(manual_dir: Path):
        gt_root = next((manual_dir / r / folder for r in TOTALTEXT_GT_ROOTS if (manual_dir / r / folder).is_dir()),
                       None)
        if gt_root is None:
            raise DataError(f"totaltext: no ground-truth folder {folder} under any of {TOTALTEXT_GT_ROOTS} in "
                            f"{manual_dir}.\n{TOTALTEXT_DOWNLOAD}")
        for stem, path in _images(manual_dir / "Images" / folder, f"totaltext {folder}").items():
            gt = gt_root / f"poly_gt_{stem}.txt"
            if not gt.is_file():
                raise DataError(f"{path}: no ground truth {gt}")
            yield stem, str(path), read_totaltext_gt(gt.read_text(encoding="utf-8-sig"), str(gt))
    return read


TOTALTEXT_DOWNLOAD = (
    "Total-Text (https://github.com/cs-chan/Total-Text-Dataset): put the images as Images/Train/*.jpg and "
    "Images/Test/*.jpg and the polygon ground truth in .txt format (Groundtruth/Text, txt_format.zip) as "
    "Txt_format/Train/poly_gt_<image>.txt and Txt_format/Test/poly_gt_<image>.txt in the manual directory.")


class TotalTextBuilder(WordsBuilder):
    name = "pgt_totaltext"
    MANUAL_DOWNLOAD_INSTRUCTIONS = TOTALTEXT_DOWNLOAD
    READERS = {"train": _totaltext_reader("Train"), "test": _totaltext_reader("Test")}


# --- HierText ---------------------------------------------------------------------------------------
HIERTEXT_DOWNLOAD = (
    "HierText (https://github.com/google-research-datasets/hiertext): put gt/train.jsonl.gz and "
    "gt/validation.jsonl.gz (the repository's gt/ folder; gunzipped .jsonl files work too) and the image "
    "folders train/ and validation/ (s3://open-images-dataset/ocr/*.tgz) in the manual directory.")


def read_hiertext_gt(path: Path) -> list[tuple[str, list[Word]]]:
    """gt/<split>.jsonl(.gz): one JSON object (despite the name) whose `annotations` hold one entry per
    image: paragraphs -> lines -> words, each word's `vertices` and `text`; illegible words are `###`."""
    if path.suffix == ".gz":
        try:
            data = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not gzipped JSON ({e})") from None
    else:
        data = read_json(path)
    out = []
    for k, ann in enumerate(field(data, "annotations", list, str(path))):
        where = f"{path}: annotations[{k}]"
        image_id = field(ann, "image_id", str, where)
        words = []
        for p, paragraph in enumerate(field(ann, "paragraphs", list, where)):
            for li, line in enumerate(field(paragraph, "lines", list, f"{where}.paragraphs[{p}]")):
                for w, word in enumerate(field(line, "words", list, f"{where}.paragraphs[{p}].lines[{li}]")):
                    at = f"{where}.paragraphs[{p}].lines[{li}].words[{w}]"
                    vertices = field(word, "vertices", list, at)
                    if len(vertices) < 3 or not all(isinstance(v, list) and len(v) == 2 for v in vertices):
                        raise DataError(f"{at}: vertices should be [[x, y], ...] with at least 3 points")
                    legible = word.get("legible", True)
                    words.append(([float(c) for v in vertices for c in v],
                                  field(word, "text", str, at) if legible else DONT_CARE))
        out.append((image_id, words))
    return out


def _hiertext_reader(split: str, names: tuple[str, ...]) -> Callable[[Path], Iterator[tuple[str, Any, list[Word]]]]:
    def read(manual_dir: Path):
        path = next((manual_dir / "gt" / n for n in names if (manual_dir / "gt" / n).is_file()), None)
        if path is None:
            raise DataError(f"hiertext: none of gt/{', gt/'.join(names)} in {manual_dir}.\n{HIERTEXT_DOWNLOAD}")
        images = _images(manual_dir / split, f"hiertext {split}")
        for image_id, words in read_hiertext_gt(path):
            if image_id not in images:
                raise DataError(f"{path}: image {image_id}.jpg is missing from {manual_dir / split}")
            yield image_id, str(images[image_id]), words
    return read


class HierTextBuilder(WordsBuilder):
    name = "pgt_hiertext"
    MANUAL_DOWNLOAD_INSTRUCTIONS = HIERTEXT_DOWNLOAD
    READERS = {"train": _hiertext_reader("train", ("train.jsonl.gz", "train.jsonl")),
               "validation": _hiertext_reader("validation", ("validation.jsonl.gz", "validation.jsonl",
                                                             "val.jsonl.gz", "val.jsonl"))}


# --- TextOCR ----------------------------------------------------------------------------------------
TEXTOCR_DOWNLOAD = (
    "TextOCR (https://textvqa.org/textocr/dataset): put TextOCR_0.1_train.json and TextOCR_0.1_val.json and "
    "TextVQA's train_images/ folder (train_val_images.zip; both splits' images are in it) in the manual "
    "directory.")
TEXTOCR_ILLEGIBLE = "."  # TextOCR's transcription of an illegible word


def read_textocr_gt(path: Path) -> list[tuple[str, str, list[Word]]]:
    """TextOCR_0.1_<split>.json -> [(image id, file_name, [(polygon, text)])]; `.` (illegible) is `###`."""
    data = read_json(path)
    imgs = field(data, "imgs", dict, str(path))
    anns = field(data, "anns", dict, str(path))
    img_to_anns = field(data, "imgToAnns", dict, str(path))
    out = []
    for image_id in sorted(imgs):
        img = imgs[image_id]
        file_name = field(img, "file_name", str, f"{path}: imgs[{image_id!r}]")
        words = []
        for ann_id in img_to_anns.get(image_id, []):
            at = f"{path}: anns[{ann_id!r}]"
            if ann_id not in anns:
                raise DataError(f"{path}: imgToAnns[{image_id!r}] names {ann_id!r}, which anns lacks")
            points = field(anns[ann_id], "points", list, at)
            if len(points) < 6 or len(points) % 2:
                raise DataError(f"{at}: points should be [x1, y1, ..., xn, yn] with n >= 3, got {len(points)} numbers")
            string = field(anns[ann_id], "utf8_string", str, at)
            words.append(([float(c) for c in points], DONT_CARE if string == TEXTOCR_ILLEGIBLE else string))
        out.append((image_id, file_name, words))
    return out


def _textocr_reader(json_name: str) -> Callable[[Path], Iterator[tuple[str, Any, list[Word]]]]:
    def read(manual_dir: Path):
        path = manual_dir / json_name
        if not path.is_file():
            raise DataError(f"textocr: {path} is missing.\n{TEXTOCR_DOWNLOAD}")
        for image_id, file_name, words in read_textocr_gt(path):
            # file_name is "train/<id>.jpg"; TextVQA's zip unpacks the images into train_images/.
            image = next((p for p in (manual_dir / file_name, manual_dir / "train_images" / Path(file_name).name)
                          if p.is_file()), None)
            if image is None:
                raise DataError(f"{path}: image {file_name} is missing (looked in {manual_dir} and train_images/)")
            yield image_id, str(image), words
    return read


class TextOcrBuilder(WordsBuilder):
    name = "pgt_textocr"
    MANUAL_DOWNLOAD_INSTRUCTIONS = TEXTOCR_DOWNLOAD
    READERS = {"train": _textocr_reader("TextOCR_0.1_train.json"), "val": _textocr_reader("TextOCR_0.1_val.json")}

