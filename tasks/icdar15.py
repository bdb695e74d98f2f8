"""ICDAR'15 incidental scene text (RRC Challenge 4): word detection + recognition, HierText protocol.

The paper's text-spotting model is one model, trained on a mixture of the train splits of ICDAR'15,
Total-Text, MLT17, MLT19, HierText, TextOCR and IntelOCR and evaluated on ICDAR'15 and Total-Text (App. B,
Table 2; docs/paligemma2-facts.md §2.6). `train_mixture` gives that mixture from the sources this project
reads (ICDAR'15, Total-Text, HierText, TextOCR: tasks/spotting.py) whose folders sit beside this one; with
none of them, ICDAR'15 alone (~900 images, thousands of epochs at 15k steps x 256), said on stderr.

Target format (a reproduction decision: the paper says only "{transcription, bounding box} pairs",
docs/paligemma2-facts.md §2.6). Every legible word becomes its quadrilateral's 4 corners, in the ground
truth's own order (clockwise from the word's top-left), each corner as `<locY><locX>` (PaliGemma's y-first
convention, as its detection boxes), then a space and the transcription; words are joined by "; " and
sorted in reading order (lines top to bottom, left to right within a line; see `reading_order`):

    <loc0100><loc0200><loc0100><loc0300><loc0140><loc0300><loc0140><loc0200> EXIT; <loc0500>... Sale

Coordinates are normalised by the image width / height and binned as round(v * 1023) (facts §1.6).
Don't-care words (`###`) are left out of the target: they have no transcription to learn, and the metric
drops any prediction lying on them, so spending output tokens on them can never score.
"""

from __future__ import annotations

import io
import re
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from metrics import text_spotting
from model.tokenizer import loc_to_unit, loc_tokens, parse_loc_groups
from tasks.base import DataError, Example, LazyExamples, Recipe, Scores, Task, ocr_example, paper_point, text
from tasks.builder import RawFilesBuilder
from tasks.mixture import MixtureSource
from tasks.protocol import family_resolution

# Unpublished (facts §2.6); a short task name in the style of PaliGemma's "ocr" / "detect" prompts.
PREFIX = "ocr with boxes"
SEPARATOR = "; "

# Raw folders (or the .zip files RRC serves under the same names). The test GT of task 4.4 and of task
# 4.1 have the same line format (quad + transcription); some mirrors name it like the training GT.
TRAIN_IMAGES = ("ch4_training_images",)
TRAIN_GT = ("ch4_training_localization_transcription_gt",)
TEST_IMAGES = ("ch4_test_images",)
TEST_GT = ("Challenge4_Test_Task4_GT", "Challenge4_Test_Task1_GT", "ch4_test_localization_transcription_gt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DOWNLOAD_INSTRUCTIONS = (
    "ICDAR'15 (Robust Reading Challenge 4, 'Incidental Scene Text'): register at "
    "https://rrc.cvc.uab.es/?ch=4&com=downloads and download, from Task 4.1 / 4.4, "
    "ch4_training_images.zip, ch4_training_localization_transcription_gt.zip, ch4_test_images.zip and "
    "Challenge4_Test_Task4_GT.zip (or Challenge4_Test_Task1_GT.zip, same format). Put the zips, or the "
    "folders of the same names unzipped, directly into the manual directory.")

# docs/paligemma2-facts.md §2.6: one recipe for text detection + recognition at every size and resolution.
STEPS = 15_000
BATCH_SIZE = 256
LR = 1e-5
LR_GRID = (1e-6, 5e-6, 1e-5, 5e-5, 1e-4)  # {0.01, 0.05, 0.1, 0.5, 1.0} x 1e-4
LABEL_SMOOTHING = 0.1
TEXT_LEN = 2048
# 896 px was best and lower resolutions "much worse" (App. B): the lr is swept there and reused elsewhere.
SWEEP_RESOLUTION = 896
# The paper's mixture (App. B), in its order; the plugins of the sources read here. MLT17, MLT19 and
# IntelOCR have no plugin yet. Weights: the paper gives none; each source weighs its size (MixtureSource).
PAPER_MIXTURE = ("icdar15", "totaltext", "mlt17", "mlt19", "hiertext", "textocr", "intelocr")
MIXTURE_TASKS = ("icdar15", "totaltext", "hiertext", "textocr")

_LINE = re.compile(r"^\s*" + r"\s*,\s*".join([r"(-?\d+)"] * 8) + r"\s*,(.*)$")
_QUOTED = re.compile(r'^\s*"(.*)"\s*$')


# --- raw files ------------------------------------------------------------------------------------
def read_gt(content: bytes, source: str) -> list[tuple[list[int], str]]:
    """One `gt_img_N.txt` -> [(x1..y4, transcription)], read as RRC's rrc_evaluation_funcs does.

    UTF-8 with optional BOM; CRLF or LF; blank lines skipped; integer coordinates; the transcription is the
    rest of the line (commas included), unquoted when wrapped in double quotes.
    """
    try:
        decoded = content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 ({e})") from None
    words = []
    for lineno, line in enumerate(decoded.split("\n"), 1):
        line = line.replace("\r", "")
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise DataError(f"{source}:{lineno}: expected x1,y1,x2,y2,x3,y3,x4,y4,transcription with "
                            f"integer coordinates, got {line!r}")
        transcription = m.group(9)
        quoted = _QUOTED.match(transcription)
        if quoted:
            transcription = quoted.group(1).replace("\\\\", "\\").replace('\\"', '"')
        words.append(([int(m.group(i)) for i in range(1, 9)], transcription))
    return words


class _RawFolder:
    """A folder of the manual dir, or the RRC zip of the same name: file name -> bytes."""

    def __init__(self, manual_dir: Path, names: tuple[str, ...]):
        self.path, self._zip, self._files = None, None, {}
        for name in names:
            if (manual_dir / name).is_dir():
                self.path = manual_dir / name
                self._files = {p.name: p for p in self.path.iterdir() if p.is_file()}
                return
            if (manual_dir / f"{name}.zip").is_file():
                self.path = manual_dir / f"{name}.zip"
                self._zip = zipfile.ZipFile(self.path)
                self._files = {Path(n).name: n for n in self._zip.namelist() if not n.endswith("/")}
                return
        raise DataError(f"icdar15: none of {', '.join(names)} (folder or .zip) in {manual_dir}.\n"
                        f"{DOWNLOAD_INSTRUCTIONS}")

    def names(self) -> list[str]:
        return sorted(self._files)

    def where(self, name: str) -> str:
        return f"{self.path}/{name}" if self._zip is None else f"{self.path}:{self._files[name]}"

    def read(self, name: str) -> bytes:
        if self._zip is None:
            return self._files[name].read_bytes()
        return self._zip.read(self._files[name])

    def __contains__(self, name: str) -> bool:
        return name in self._files


def _split_examples(manual_dir: Path, image_names: tuple[str, ...],
                    gt_names: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    images, gts = _RawFolder(manual_dir, image_names), _RawFolder(manual_dir, gt_names)
    stems = {Path(n).stem: n for n in images.names() if Path(n).suffix.lower() in IMAGE_SUFFIXES}
    for gt_name in gts.names():
        if gt_name.startswith("gt_") and gt_name.endswith(".txt") and gt_name[3:-4] not in stems:
            raise DataError(f"{gts.where(gt_name)}: no image {gt_name[3:-4]}.jpg in {images.path}")
    for stem, image_name in sorted(stems.items()):
        gt_name = f"gt_{stem}.txt"
        if gt_name not in gts:
            raise DataError(f"{images.where(image_name)}: no ground truth {gt_name} in {gts.path}")
        words = read_gt(gts.read(gt_name), gts.where(gt_name))
        yield stem, {
            "image": io.BytesIO(images.read(image_name)),
            "image_id": stem,
            "quads": np.asarray([q for q, _ in words], np.float32).reshape(-1, 8),
            "texts": [t for _, t in words],
        }


class Icdar15Builder(RawFilesBuilder):
    """ICDAR'15 Challenge 4 images with their word quads and transcriptions (`###` kept)."""

    name = "icdar15"
    RELEASE_NOTES = {"1.0.0": "Challenge 4 train (1000) and test (500) images, word quads + text."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_INSTRUCTIONS

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "image_id": tfds.features.Text(),
            "quads": tfds.features.Tensor(shape=(None, 8), dtype=np.float32),
            "texts": tfds.features.Sequence(tfds.features.Text()),
        }))

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        return {"train": self._generate_examples(manual, TRAIN_IMAGES, TRAIN_GT),
                "test": self._generate_examples(manual, TEST_IMAGES, TEST_GT)}

    def _generate_examples(self, manual_dir, image_names, gt_names):
        yield from _split_examples(manual_dir, image_names, gt_names)


# --- target text ------------------------------------------------------------------------------------
def reading_order(quads: np.ndarray) -> list[int]:
    """Indices of quads in reading order: lines top to bottom, words left to right within a line.

    Quads are taken by centre y; one joins the current line while its centre lies inside the vertical
    extent of the line's first quad, else it starts the next line.
    """
    quads = np.asarray(quads, np.float64).reshape(-1, 8)
    cx, cy = quads[:, 0::2].mean(axis=1), quads[:, 1::2].mean(axis=1)
    lines: list[list[int]] = []
    for k in np.argsort(cy, kind="stable"):
        if lines and quads[lines[-1][0], 1::2].min() <= cy[k] <= quads[lines[-1][0], 1::2].max():
            lines[-1].append(int(k))
        else:
            lines.append([int(k)])
    return [k for line in lines for k in sorted(line, key=lambda k: cx[k])]


def format_target(quads: np.ndarray, texts: list[str], width: int, height: int) -> str:
    """The training suffix: legible words in reading order, `<locY><locX>` x 4 then the text."""
    quads = np.asarray(quads, np.float64).reshape(-1, 8)
    words = []
    for k in reading_order(quads):
        if texts[k] == text_spotting.DONT_CARE:
            continue
        yx = np.stack([quads[k, 1::2] / height, quads[k, 0::2] / width], axis=1).reshape(-1)
        words.append(f"{loc_tokens(yx)} {texts[k]}")
    return SEPARATOR.join(words)


def parse_words(output: str) -> dict[str, Any]:
    """Model text -> {"words": [{"quad": [x1, y1, ..., x4, y4] in [0, 1], "text"}], "malformed": n}.

    Quads stay normalised here (the image size is the reference's); `score` scales them to pixels.
    Malformed pieces (a loc run that is not 8 well-formed tokens, text before the first word) are
    counted and skipped, never raised.
    """
    parsed = parse_loc_groups(output, group_size=8)
    malformed = len(parsed.errors)
    groups = parsed.groups
    words = []
    leading = output[:groups[0].start] if groups else output
    if leading.strip() and "<loc" not in leading:  # a malformed loc run there is already counted
        malformed += 1
    for k, group in enumerate(groups):
        end = groups[k + 1].start if k + 1 < len(groups) else len(output)
        segment = output[group.end:end]
        cut = segment.find("<loc")  # a malformed loc run ends this word's text
        segment = segment if cut < 0 else segment[:cut]
        segment = segment.removeprefix(" ")
        if k + 1 < len(groups) or cut >= 0:
            separator = SEPARATOR if segment.endswith(SEPARATOR) else SEPARATOR.strip()
            segment = segment.removesuffix(separator)
        ys = [loc_to_unit(v) for v in group.values[0::2]]
        xs = [loc_to_unit(v) for v in group.values[1::2]]
        words.append({"quad": [c for xy in zip(xs, ys) for c in xy], "text": segment})
    return {"words": words, "malformed": malformed}


# --- the plugin -------------------------------------------------------------------------------------
class Icdar15(Task):
    name = "icdar15"
    description = ("ICDAR'15 incidental scene text: word quads + transcriptions, scored end to end with "
                   "the HierText protocol (IoU >= 0.5, exact case-sensitive text).")
    headline = "e2e_f1"
    # Bump with any change to prompt, parse, metric, recipe or demo data (2: demo text drawn for 32/64 px;
    # 3: the sweep at 896 px, the paper's soft-caps).
    version = 3
    # ICDAR'15 has no validation split: minival holds out 10% of train for lr selection; the paper reports
    # on the 500 test images, whose ground truth is public.
    splits = {"train": "train[:90%]", "minival": "train[90%:]", "eval": "test", "test": "test"}
    download_instructions = DOWNLOAD_INSTRUCTIONS

    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        return Icdar15Builder(data_dir=str(data_dir))

    def example(self, record: Mapping[str, Any]) -> Example:
        image = np.asarray(record["image"])
        height, width = image.shape[:2]
        quads = np.asarray(record["quads"], np.float32).reshape(-1, 8)
        texts = [text(t) for t in record["texts"]]
        reference = {"width": int(width), "height": int(height),
                     "words": [{"quad": [float(c) for c in q], "text": t} for q, t in zip(quads, texts)]}
        return Example(id=text(record["image_id"]), image=image, prefix=PREFIX,
                       targets=(format_target(quads, texts, width, height),), reference=reference)

    def ocr_examples(self, manual_dir: str | Path, role: str = "train") -> LazyExamples:
        """Each scene's legible words (not `###`) top to bottom, then left to right within a line."""
        def make(ex: Example) -> Example:
            words = [w for w in ex.reference["words"] if w["text"] != text_spotting.DONT_CARE]
            words.sort(key=lambda w: (round(min(w["quad"][1::2]) / 32), min(w["quad"][0::2])))
            return ocr_example(ex, [w["text"] for w in words])

        return LazyExamples(self.examples(manual_dir, role), make)

    def recipe(self, size: str, resolution: int) -> Recipe:
        paper_point(size, resolution)  # the paper gives one recipe for all sizes and resolutions
        # Weight decay and dropout: the paper is silent, so big_vision's transfer default of 0 holds.
        # max_decode_len = text_len, big_vision's default (facts §1.7). Greedy: the paper names no beam.
        return Recipe(batch_size=BATCH_SIZE, steps=STEPS, lr=LR, lr_grid=LR_GRID,
                      label_smoothing=LABEL_SMOOTHING, text_len=TEXT_LEN, max_decode_len=TEXT_LEN,
                      sweep_resolution=family_resolution(SWEEP_RESOLUTION, resolution))

    def train_mixture(self, manual_dir: str | Path) -> list[MixtureSource]:
        """The paper's text-spotting mixture (module doc): this task's train split plus the train split of
        each other source whose folder (data_root/<task>, beside `manual_dir`) exists and is not empty."""
        manual_dir = Path(manual_dir)
        sources = [MixtureSource(self.name, manual_dir)]
        for name in MIXTURE_TASKS:
            folder = manual_dir.parent / name
            if name != self.name and folder.is_dir() and any(folder.iterdir()):
                sources.append(MixtureSource(name, folder))
        if len(sources) == 1:
            others = ", ".join(n for n in MIXTURE_TASKS if n != self.name)
            print(f"{self.name}: training on {self.name} alone; the paper's mixture adds {others} (and MLT17, "
                  f"MLT19, IntelOCR), none of which is in {manual_dir.parent}", file=sys.stderr)
        return sources

    def parse(self, text: str) -> dict[str, Any]:
        return parse_words(text)

    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        ids = sorted(references)
        pred_words, gt_words, unparsable, malformed = [], [], 0, 0
        for image_id in ids:
            ref = references[image_id]
            w, h = ref["width"], ref["height"]
            gt_words.append([(_points(word["quad"]), word["text"]) for word in ref["words"]])
            pred = predictions.get(image_id) or {"words": [], "malformed": 0}
            unparsable += int(pred["malformed"] > 0)
            malformed += pred["malformed"]
            pred_words.append([(_points(word["quad"], w, h), word["text"]) for word in pred["words"]])
        metrics, per_image = text_spotting.hiertext(pred_words, gt_words)
        metrics.update(text_spotting.rrc_detection(pred_words, gt_words))
        total = sum(per_image, text_spotting.SpottingCounts())
        extra = {"counts": total.as_dict(), "malformed_groups": malformed,
                 "per_example": {i: c.as_dict() for i, c in zip(ids, per_image)}}
        return Scores(metrics=metrics, num_examples=len(ids), num_unparsable=unparsable, extra=extra)

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        from tasks.demo.icdar15 import write_demo

        write_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)


def _points(quad: list[float], width: float = 1.0, height: float = 1.0) -> list[tuple[float, float]]:
    """Flat x1, y1, ..., xn, yn -> points: 4 for quads, more for the polygons of Total-Text or HierText."""
    return [(quad[k] * width, quad[k + 1] * height) for k in range(0, len(quad) - 1, 2)]
