"""Demo scenes in the raw formats of Total-Text, HierText and TextOCR (tasks/spotting.py reads them).

The scenes are ICDAR'15's demo scenes (tasks/demo/icdar15.py `render`); only the files differ. Total-Text
words are written as 8-vertex polygons (each quad's edge midpoints added), as its curved-text polygons have
more than 4 vertices; HierText gets each word in its own line and paragraph; TextOCR its JSON of imgs, anns
and imgToAnns, with `.` for an illegible word.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from tasks.demo.icdar15 import render


def _octagon(quad: np.ndarray) -> np.ndarray:
    quad = np.asarray(quad, np.float64).reshape(4, 2)
    mids = (quad + np.roll(quad, -1, axis=0)) / 2
    return np.stack([quad, mids], axis=1).reshape(8, 2)


def _scenes(seed: int, index: int, count: int, tag: int):
    for n in range(1, count + 1):
        image, words = render(np.random.default_rng([seed, 100 + tag, index, n]))
        yield n, image, words


def write_totaltext_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    root = Path(manual_dir)
    for index, (folder, count) in enumerate((("Train", num_train), ("Test", num_eval))):
        (root / "Images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "Txt_format" / folder).mkdir(parents=True, exist_ok=True)
        for n, image, words in _scenes(seed, index, count, 1):
            image.save(root / "Images" / folder / f"img{n}.jpg", format="JPEG", quality=90)
            lines = []
            for quad, word in words:
                poly = np.rint(_octagon(quad)).astype(int)
                text = "#" if word == "###" else word
                lines.append(f"x: [[{' '.join(map(str, poly[:, 0]))}]], y: [[{' '.join(map(str, poly[:, 1]))}]], "
                             f"ornt: [u'{'#' if text == '#' else 'm'}'], transcriptions: [u'{text}']")
            (root / "Txt_format" / folder / f"poly_gt_img{n}.txt").write_text("\n".join(lines) + "\n")


def write_hiertext_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    root = Path(manual_dir)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for index, (split, count) in enumerate((("train", num_train), ("validation", num_eval))):
        (root / split).mkdir(parents=True, exist_ok=True)
        annotations = []
        for n, image, words in _scenes(seed, index, count, 2):
            image_id = f"{split[:2]}{n:014x}"
            image.save(root / split / f"{image_id}.jpg", format="JPEG", quality=90)
            paragraphs = []
            for quad, word in words:
                vertices = np.rint(np.asarray(quad).reshape(4, 2)).astype(int).tolist()
                legible = word != "###"
                w = {"vertices": vertices, "text": word if legible else "", "legible": legible,
                     "handwritten": False, "vertical": False}
                paragraphs.append({"vertices": vertices, "legible": legible, "lines": [
                    {"vertices": vertices, "text": w["text"], "legible": legible, "handwritten": False,
                     "vertical": False, "words": [w]}]})
            annotations.append({"image_id": image_id, "image_width": image.width, "image_height": image.height,
                                "paragraphs": paragraphs})
        body = json.dumps({"info": {"date": "demo", "version": "demo"}, "annotations": annotations})
        (root / "gt" / f"{split}.jsonl.gz").write_bytes(gzip.compress(body.encode(), mtime=0))


def write_textocr_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    root = Path(manual_dir)
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    for index, (split, count) in enumerate((("train", num_train), ("val", num_eval))):
        imgs, anns, img_to_anns = {}, {}, {}
        for n, image, words in _scenes(seed, index, count, 3):
            image_id = f"{split}{n:012x}"
            image.save(root / "train_images" / f"{image_id}.jpg", format="JPEG", quality=90)
            imgs[image_id] = {"id": image_id, "width": image.width, "height": image.height, "set": split,
                              "file_name": f"train/{image_id}.jpg"}
            img_to_anns[image_id] = []
            for k, (quad, word) in enumerate(words):
                points = np.round(np.asarray(quad, np.float64).reshape(-1), 2).tolist()
                xs, ys = points[0::2], points[1::2]
                ann_id = f"{image_id}_{k + 1}"
                anns[ann_id] = {"id": ann_id, "image_id": image_id, "points": points,
                                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                                "utf8_string": "." if word == "###" else word, "area": 0.0}
                img_to_anns[image_id].append(ann_id)
        (root / f"TextOCR_0.1_{split}.json").write_text(json.dumps({"imgs": imgs, "anns": anns,
                                                                    "imgToAnns": img_to_anns}))
