"""Demo DocVQA data: small rendered documents with a title and a few "key: value" fields, questions about
them, in the RRC layout.

Each document is a square page (192 px) with a bold title (INVOICE, RECEIPT, MEMO, ...) and three fields
from a bounded vocabulary (a surname, a year, an amount, a number, a department, a city). Questions ask
for one field or the document type; answers are the field's text, sometimes with a second accepted
spelling (an amount without "$", the title in lower case), as DocVQA's answer lists have.

The text is drawn for the demo grid's resolutions: font size 24-28 px on a 192 px page is an x-height of
13-15 px, about 4.4-5.1 px once the page is resized to 64 px (legible) and 2.2-2.6 px at 32 px (not), so
the task needs the higher resolution as real DocVQA needs 448 px over 224. A line holds about 11
characters at that size, so keys and values are short; a page whose text would run past its edge is
redrawn. `docs/demo-findings.md` §3 gives the x-height at each grid resolution.

Layout written (RRC's single-page DocVQA download, so the real TFDS builder reads it unchanged):
    {train,val,test}_v1.0_withQT.json      ("data": questionId, question, question_types, image, docId,
                                            ucsf_document_id, ucsf_document_page_no, answers (not test))
    documents/<ucsf_document_id>_<page>.png
    ocr_results/<ucsf_document_id>_<page>.json  (the release's OCR: "recognitionResults" -> "lines" with
                                                 "boundingBox" and "text", and their "words")
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAGE_SIZE = (192, 192)
VALUE_SIZES = (32, 36)  # inclusive bounds of the values' font size, drawn once per page
TITLE_SIZES = (26, 30)  # the bold title's
KEY_SIZE = 13  # the keys' ("Year:"): small, as a form's printed labels are
FIELDS_PER_DOC = 2
QUESTIONS_PER_DOC = 3
SPLITS = ("train", "val", "test")
# Question and document ids are unique across the splits, as in DocVQA.
ID_OFFSET = {"train": 10_000, "val": 50_000, "test": 90_000}

TITLES = ("INVOICE", "RECEIPT", "MEMO", "ORDER", "REPORT", "FORM", "NOTICE", "LETTER")
SURNAMES = ("Smith", "Patel", "Garcia", "Nguyen", "Miller", "Okafor", "Rossi", "Tanaka", "Dubois", "Jensen",
            "Moreau", "Silva", "Cohen", "Larsen", "Kim", "Lee")
DEPARTMENTS = ("Legal", "Sales", "Audit", "Tax", "Admin", "Labs", "Press", "Store")
CITIES = ("Rome", "Paris", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Miami", "Dover", "Perth")


@functools.cache
def font(size: int, style: str = "") -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's bundled fonts; style "" / "Bold" / "Oblique"."""
    import matplotlib

    name = f"DejaVuSans-{style}.ttf" if style else "DejaVuSans.ttf"
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)


def write_docvqa_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """Write `num_train` training and `num_eval` validation (and test) questions into `manual_dir`."""
    manual_dir = Path(manual_dir)
    (manual_dir / "documents").mkdir(parents=True, exist_ok=True)
    (manual_dir / "ocr_results").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, num in zip(SPLITS, (num_train, num_eval, num_eval)):
        _write_split(manual_dir, split, num, rng)


def _write_split(manual_dir: Path, split: str, num_questions: int, rng: np.random.Generator) -> None:
    data, doc_index = [], 0
    while len(data) < num_questions:
        doc_id = ID_OFFSET[split] + doc_index
        ucsf_id = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=4)) + f"{doc_id % 10000:04d}"
        image_name = f"documents/{ucsf_id}_1.png"
        page, fields, lines = _document(rng)
        page.save(manual_dir / image_name, format="PNG", compress_level=1)
        with open(manual_dir / "ocr_results" / f"{ucsf_id}_1.json", "w", encoding="utf-8") as f:
            json.dump(_ocr_json(lines), f)
        order = rng.permutation(len(fields))[: min(QUESTIONS_PER_DOC, num_questions - len(data))]
        for k in order:
            question, answers, question_type = fields[k]
            entry = {"questionId": ID_OFFSET[split] * 10 + len(data), "question": question,
                     "question_types": [question_type], "image": image_name, "docId": doc_id,
                     "ucsf_document_id": ucsf_id, "ucsf_document_page_no": "1", "data_split": split}
            if split != "test":  # the test answers are withheld, as in the RRC release
                entry["answers"] = answers
            data.append(entry)
        doc_index += 1
    with open(manual_dir / f"{split}_v1.0_withQT.json", "w", encoding="utf-8") as f:
        json.dump({"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0",
                   "data": data}, f)


# A field: (question, accepted answers, DocVQA question type).
Field = tuple[str, list[str], str]


def _name(rng: np.random.Generator) -> tuple[str, str, list[str], str]:
    name = str(rng.choice(SURNAMES))
    return "Name", name, [name], "What is the name on the document?"


def _year(rng: np.random.Generator) -> tuple[str, str, list[str], str]:
    year = str(int(rng.integers(1980, 2001)))
    return "Year", year, [year], "What is the year?"


def _total(rng: np.random.Generator) -> tuple[str, str, list[str], str]:
    value = str(int(rng.integers(10, 1000)))
    return "Total", f"${value}", [f"${value}"] + ([value] if rng.random() < 0.4 else []), \
        "What is the total amount?"


def _number(rng: np.random.Generator) -> tuple[str, str, list[str], str]:
    value = str(int(rng.integers(1000, 10000)))
    return "No", value, [value], "What is the number?"


def _department(rng: np.random.Generator) -> tuple[str, str, list[str], str]:
    dept = str(rng.choice(DEPARTMENTS))
    return "Dept", dept, [dept], "Which department is mentioned?"


def _city(rng: np.random.Generator) -> tuple[str, str, list[str], str]:
    city = str(rng.choice(CITIES))
    return "City", city, [city], "Which city is mentioned?"


FIELD_KINDS: tuple[Callable, ...] = (_name, _year, _total, _number, _department, _city)


# A line of text as drawn: (text, [x0, y0, x1, y1] of each word).
Line = tuple[str, list[tuple[str, list[int]]]]


def _ocr_json(lines: list[Line]) -> dict:
    """The DocVQA release's OCR file (Microsoft Read API output): lines and words with 8-number
    clockwise bounding boxes from the top-left."""
    def quad(box: list[int]) -> list[int]:
        x0, y0, x1, y1 = box
        return [x0, y0, x1, y0, x1, y1, x0, y1]

    out = []
    for text, words in lines:
        xs = [b for _, b in words]
        box = [min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs)]
        out.append({"boundingBox": quad(box), "text": text,
                    "words": [{"boundingBox": quad(b), "text": w} for w, b in words]})
    return {"status": "Succeeded", "recognitionResults": [
        {"page": 1, "clockwiseOrientation": 0.0, "width": PAGE_SIZE[0], "height": PAGE_SIZE[1],
         "unit": "pixel", "lines": out}]}


def _document(rng: np.random.Generator) -> tuple[Image.Image, list[Field], list[Line]]:
    """One page, its fields and its lines of text; a draw whose text would run past the page's edge is
    redrawn. A field line is its key in small type and its value in large type on one baseline."""
    while True:
        page = Image.new("L", PAGE_SIZE, int(rng.integers(225, 256)))
        draw = ImageDraw.Draw(page)
        size = int(rng.integers(VALUE_SIZES[0], VALUE_SIZES[1] + 1))
        title_size = int(rng.integers(TITLE_SIZES[0], TITLE_SIZES[1] + 1))
        margin, ink = int(rng.integers(4, 12)), int(rng.integers(0, 60))
        spacing = float(rng.uniform(1.15, 1.35))
        title = str(rng.choice(TITLES))
        kinds = rng.permutation(len(FIELD_KINDS))[:FIELDS_PER_DOC]
        rows = [FIELD_KINDS[k](rng) for k in kinds]
        # Each line: its words as (text, font size, style).
        lines = [[(title, title_size, "Bold")]] + [[(f"{key}:", KEY_SIZE, ""), (value, size, "")]
                                                   for key, value, _, _ in rows]
        heights = [int(max(s for _, s, _ in line) * spacing) for line in lines]
        height = sum(heights) + title_size // 2
        widest = max(sum(draw.textlength(w + " ", font=font(s, st)) for w, s, st in line) for line in lines)
        if margin + widest > PAGE_SIZE[0] - 4 or height > PAGE_SIZE[1] - 8:
            continue
        y = int(rng.integers(4, PAGE_SIZE[1] - height - 3))
        drawn: list[Line] = []
        for i, (line, line_height) in enumerate(zip(lines, heights)):
            baseline = y + int(line_height / spacing * 0.8)  # DejaVu's ascent is ~0.8 of its size
            words, x = [], float(margin)
            for word, s, st in line:
                draw.text((x, baseline), word, fill=ink, font=font(s, st), anchor="ls")
                words.append((word, [int(v) for v in draw.textbbox((x, baseline), word, font=font(s, st),
                                                                  anchor="ls")]))
                x += draw.textlength(word + " ", font=font(s, st))
            drawn.append((" ".join(w for w, _ in words), words))
            y += line_height
            if i == 0:  # a rule under the title
                draw.line([(margin, y - title_size // 6), (PAGE_SIZE[0] - margin, y - title_size // 6)],
                          fill=ink, width=2)
                y += title_size // 2
        fields = [(question, answers, "form") for _, _, answers, question in rows]
        fields.append(("What type of document is this?", [title, title.lower()], "layout"))
        return page, fields, drawn
