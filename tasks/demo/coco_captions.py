"""Synthetic COCO captions: scenes of coloured shapes, five templated captions each.

Written in the official layout (`annotations/captions_{train,val}2014.json`, `{train,val}2014/
COCO_<split>2014_<id:012d>.jpg`, Karpathy's `dataset_coco.json`), so the real builder reads it.
Content is coarse (colour, shape kind, size, position, relations, count, background): a tiny model
can learn some of it even at 32 px. The caption wording varies per image, as COCO's five annotators do.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 320, 240  # COCO's 4:3 landscape at half size
COLORS = {"red": (215, 35, 35), "green": (35, 160, 60), "blue": (35, 75, 215),
          "yellow": (240, 205, 30), "purple": (135, 55, 175), "orange": (245, 135, 25),
          "black": (20, 20, 20)}
BACKGROUNDS = {"white": (255, 255, 255), "gray": (170, 170, 170), "beige": (235, 222, 190)}
KINDS = ("circle", "square", "triangle")
SIZES = {"small": 0.09, "large": 0.16}  # half-extent as a fraction of the image height
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str
    row: int  # cell of a 3 x 3 grid, one shape per cell
    col: int
    x: float  # centre, in pixels
    y: float


def sample_scene(rng: random.Random) -> tuple[str, list[Shape]]:
    """A background name and 1-3 shapes in distinct cells of a 3 x 3 grid."""
    background = rng.choice(list(BACKGROUNDS))
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], rng.choice((1, 2, 2, 3)))
    shapes = []
    for row, col in cells:
        size = rng.choice(list(SIZES))
        jitter = 0.25 - SIZES[size]  # keep large shapes inside their cell
        x = (col + 0.5 + rng.uniform(-jitter, jitter)) * WIDTH / 3
        y = (row + 0.5 + rng.uniform(-jitter, jitter)) * HEIGHT / 3
        shapes.append(Shape(rng.choice(KINDS), rng.choice(list(COLORS)), size, row, col, x, y))
    return background, shapes


def render(background: str, shapes: list[Shape]) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    for s in shapes:
        r = SIZES[s.size] * HEIGHT
        fill = COLORS[s.color]
        if s.kind == "circle":
            draw.ellipse((s.x - r, s.y - r, s.x + r, s.y + r), fill=fill)
        elif s.kind == "square":
            draw.rectangle((s.x - r, s.y - r, s.x + r, s.y + r), fill=fill)
        else:
            draw.polygon([(s.x, s.y - r), (s.x - r, s.y + r), (s.x + r, s.y + r)], fill=fill)
    return image


def captions(background: str, shapes: list[Shape], rng: random.Random, k: int = 5) -> list[str]:
    """`k` distinct captions drawn from templates that all describe the scene truthfully."""
    options = _caption_options(background, shapes)
    return rng.sample(options, k)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _where(s: Shape) -> str:
    if (s.row, s.col) == (1, 1):
        return "in the center"
    if s.row == 1:
        return f"on the {_COLS[s.col]}"
    if s.col == 1:
        return f"at the {_ROWS[s.row]}"
    return f"in the {_ROWS[s.row]} {_COLS[s.col]} corner"


def _relation(a: Shape, b: Shape) -> str:
    """Where `a` is relative to `b`, along the axis on which they are further apart."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def _caption_options(background: str, shapes: list[Shape]) -> list[str]:
    bg = f"on {_a(background)} background"
    plain = [_a(f"{s.color} {s.kind}") for s in shapes]
    sized = [_a(f"{s.size} {s.color} {s.kind}") for s in shapes]
    n = len(shapes)
    if n == 1:
        s = shapes[0]
        return [f"{sized[0]} {_where(s)}", f"{plain[0]} {bg}", f"a single {s.color} {s.kind}",
                f"an image of {sized[0]}", f"there is one {s.color} {s.kind} {_where(s)}",
                f"{_a(s.kind)} colored {s.color} {_where(s)}",
                f"one {s.size} {s.kind} {bg}"]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    options = [f"{plain[i]} {_relation(shapes[i], shapes[j])} {plain[j]}" for i, j in pairs[:4]]
    options += [f"{COUNT_WORDS[n]} shapes {bg}",
                f"{COUNT_WORDS[n]} colorful shapes",
                f"{_a(background)} background with " + _join(plain),
                _join(sized),
                f"there is {plain[0]} {_relation(shapes[0], shapes[1])} {plain[1]}",
                "an image with " + _join(sized)]
    return list(dict.fromkeys(options))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def write_coco_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """num_train training images (a fifth of them, as Karpathy's restval, in val2014) and num_eval
    images each for Karpathy val and test, plus the annotation and split files."""
    rng = random.Random(seed)
    root = Path(manual_dir)
    num_restval = num_train // 5
    plan = ([("train2014", "train")] * (num_train - num_restval)
            + [("val2014", "restval")] * num_restval
            + [("val2014", "val")] * num_eval + [("val2014", "test")] * num_eval)
    ids = rng.sample(range(1, 600_000), len(plan))
    coco = {folder: {"info": {"description": "paligemma-transfer demo (synthetic shapes)",
                              "version": "1.0", "year": 2014},
                     "images": [], "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
                     "annotations": []} for folder in ("train2014", "val2014")}
    karpathy = []
    next_sentence_id = 1
    for image_id, (folder, split) in zip(ids, plan):
        background, shapes = sample_scene(rng)
        texts = captions(background, shapes, rng)
        file_name = f"COCO_{folder}_{image_id:012d}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        render(background, shapes).save(root / folder / file_name, quality=90)
        coco[folder]["images"].append({"license": 1, "file_name": file_name, "coco_url": "",
                                       "height": HEIGHT, "width": WIDTH,
                                       "date_captured": "2013-11-14 16:28:13", "flickr_url": "",
                                       "id": image_id})
        sentences = []
        for text in texts:
            coco[folder]["annotations"].append(
                {"image_id": image_id, "id": next_sentence_id, "caption": text})
            sentences.append({"tokens": text.split(), "raw": text, "imgid": len(karpathy),
                              "sentid": next_sentence_id})
            next_sentence_id += 1
        karpathy.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences],
                         "filename": file_name, "imgid": len(karpathy), "split": split,
                         "sentences": sentences, "cocoid": image_id})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for folder, content in coco.items():
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(content))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
