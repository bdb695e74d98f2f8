"""Demo VQAv2 data: coloured-shape scenes with questions, written in the official VQAv2 raw layout.

In the spirit of the `easy_vqa` package (shapes and colours), but generated from a seed: easy_vqa ships a
fixed set of 5,000 64-px images without counting questions, while the demo grid and the nano pretraining
need fresh scenes per seed at ~224-320 px and all three VQAv2 answer types (yes/no, number, other).

Layout written (the official file names, so the real TFDS builder reads it unchanged):
    v2_OpenEnded_mscoco_{train2014,val2014,test2015}_questions.json
    v2_mscoco_{train2014,val2014}_annotations.json
    {train2014,val2014,test2015}/COCO_<subtype>_<12-digit image id>.jpg

Each question has 10 human answers: mostly the canonical answer, some written differently but equal after
the official normalization ("Yes", "yes.", "two", "the red"), and at most two wrong ones, so the metric's
normalization and partial-credit paths both run. Shapes are large: coarse content suffices for this task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 210, 40), "purple": (140, 60, 180), "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
QUESTIONS_PER_IMAGE = 3
SUBTYPES = {"train": "train2014", "val": "val2014", "test": "test2015"}
# COCO image ids are unique across its splits; the demo keeps them apart by a per-split offset.
IMAGE_ID_OFFSET = {"train": 1, "val": 1_000_001, "test": 2_000_001}

_INFO = {"description": "Demo data in the VQA v2 layout (coloured shapes), written by paligemma-transfer",
         "version": "2.0", "year": 2017}
_LICENSE = {"name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}


def write_vqav2_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """Write `num_train` training and `num_eval` validation (and test) questions into `manual_dir`."""
    manual_dir = Path(manual_dir)
    manual_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, num in (("train", num_train), ("val", num_eval), ("test", num_eval)):
        _write_split(manual_dir, split, num, rng)


def _write_split(manual_dir: Path, split: str, num_questions: int, rng: np.random.Generator) -> None:
    subtype = SUBTYPES[split]
    image_dir = manual_dir / subtype
    image_dir.mkdir(exist_ok=True)
    questions, annotations = [], []
    for i in range(math.ceil(num_questions / QUESTIONS_PER_IMAGE)):
        image_id = IMAGE_ID_OFFSET[split] + i
        image, objects = _scene(rng)
        image.save(image_dir / f"COCO_{subtype}_{image_id:012d}.jpg", format="JPEG", quality=90)
        count = min(QUESTIONS_PER_IMAGE, num_questions - i * QUESTIONS_PER_IMAGE)
        for k, qa in enumerate(_questions(objects, count, rng)):
            question_id = image_id * 1000 + k  # VQA's convention: image id x 1000 + index
            questions.append({"image_id": image_id, "question": qa["question"], "question_id": question_id})
            annotations.append({
                "question_type": qa["question_type"], "multiple_choice_answer": qa["answer"],
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                            for j, a in enumerate(_human_answers(qa, rng))],
                "image_id": image_id, "answer_type": qa["answer_type"], "question_id": question_id})
    _dump(manual_dir / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
          {"info": _INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": _LICENSE,
           "data_subtype": subtype, "questions": questions})
    if split != "test":  # test2015 annotations are not public
        _dump(manual_dir / f"v2_mscoco_{subtype}_annotations.json",
              {"info": _INFO, "license": _LICENSE, "data_subtype": subtype, "annotations": annotations})


def _dump(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _scene(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[str, str]]]:
    """1-4 large non-overlapping shapes on a light background; returns the image and (colour, shape)s."""
    width, height = int(rng.integers(224, 321)), int(rng.integers(224, 321))
    background = tuple(int(v) for v in rng.integers(225, 256, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):
            r = float(rng.uniform(0.12, 0.2)) * min(width, height)
            cx, cy = float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r))
            if all(math.hypot(cx - x, cy - y) > r + pr + 4 for x, y, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
        jitter = rng.integers(-20, 21, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[color], jitter))
        _draw_shape(draw, shape, cx, cy, r, fill)
        objects.append((color, shape))
    return image, objects


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:
        corners = [(cx, cy - r), (cx - r * 0.95, cy + r * 0.75), (cx + r * 0.95, cy + r * 0.75)]
        draw.polygon(corners, fill=fill)


def _questions(objects: list[tuple[str, str]], count: int, rng: np.random.Generator) -> list[dict]:
    """`count` distinct questions about the scene, drawn from the templates that apply to it."""
    candidates = []
    colors = [c for c, _ in objects]
    shapes = [s for _, s in objects]
    # Sorted, not set order: a set of strings iterates in PYTHONHASHSEED's order, which differs per process.
    for shape in sorted(set(shapes)):
        if shapes.count(shape) == 1:
            candidates.append(_qa(f"what color is the {shape}?", colors[shapes.index(shape)],
                                  "other", "what color is the"))
    for color in sorted(set(colors)):
        if colors.count(color) == 1:
            candidates.append(_qa(f"what shape is the {color} object?", shapes[colors.index(color)],
                                  "other", "what is the"))
    candidates.append(_qa("how many shapes are there?", str(len(objects)), "number", "how many"))
    shape = str(rng.choice(SHAPES))
    candidates.append(_qa(f"how many {shape}s are in the picture?", str(shapes.count(shape)),
                          "number", "how many"))
    color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
    if rng.random() < 0.5:  # ask about a present object half of the time (a scene has at least one)
        color, shape = objects[int(rng.integers(len(objects)))]
    article = "an" if color[0] in "aeiou" else "a"
    present = "yes" if (color, shape) in objects else "no"
    candidates.append(_qa(f"is there {article} {color} {shape}?", present, "yes/no", f"is there {article}"))
    # At least the three count / yes-no candidates exist, so `count` <= QUESTIONS_PER_IMAGE always fits.
    return [candidates[i] for i in rng.permutation(len(candidates))[:count]]


def _qa(question: str, answer: str, answer_type: str, question_type: str) -> dict:
    return {"question": question, "answer": answer, "answer_type": answer_type,
            "question_type": question_type}


def _human_answers(qa: dict, rng: np.random.Generator) -> list[str]:
    """10 answers: canonical, variants equal after normalization, and at most two wrong ones."""
    answer, kind = qa["answer"], qa["answer_type"]
    out, wrong = [], 0
    for _ in range(10):
        u = rng.random()
        if u < 0.06 and wrong < 2:
            out.append(_wrong(answer, kind, rng))
            wrong += 1
        elif u < 0.25:
            out.append(str(rng.choice(_variants(answer, kind))))
        else:
            out.append(answer)
    return out


def _variants(answer: str, kind: str) -> list[str]:
    if kind == "yes/no":
        return [answer.capitalize(), f"{answer}.", answer.upper()]
    if kind == "number":
        return [NUMBER_WORDS[int(answer)], f"{answer}.", NUMBER_WORDS[int(answer)].capitalize()]
    return [answer.capitalize(), f"the {answer}", f"{answer}."]


def _wrong(answer: str, kind: str, rng: np.random.Generator) -> str:
    if kind == "yes/no":
        return "no" if answer == "yes" else "yes"
    if kind == "number":
        return str(int(answer) + 1)
    pool = [c for c in COLORS if c != answer] if answer in COLORS else [s for s in SHAPES if s != answer]
    return str(rng.choice(pool))
