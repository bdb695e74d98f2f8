"""Demo DocVQA data: rendered business documents with questions about their fields, in the RRC layout.

Each document is an invoice, a letter or a form drawn with DejaVu fonts (matplotlib's copies, so every
machine has them): a header, "key: value" fields (numbers, dates, amounts, names, departments), filler
text and rules. Questions ask for one field; the answers are the field's text, sometimes with a second
accepted spelling (another date format, an amount without "$"), as DocVQA's answer lists have.

Text is small relative to the ~400 x 448 page (body 15-19 px, about 1/25 of the page height): readable at
128 px, a few pixels tall at 64 px and under 2 px at 32 px, so resolution matters as it does for the real
task. Values come from small vocabularies or fixed formats, so a tiny model can learn part of the task
(formats and frequent words) in a few hundred steps.

Layout written (RRC's single-page DocVQA download, so the real TFDS builder reads it unchanged):
    {train,val,test}_v1.0_withQT.json      ("data": questionId, question, question_types, image, docId,
                                            ucsf_document_id, ucsf_document_page_no, answers (not test))
    documents/<ucsf_document_id>_<page>.png
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAGE_SIZE = (400, 448)
QUESTIONS_PER_DOC = 3
SPLITS = ("train", "val", "test")
# Question and document ids are unique across the splits, as in DocVQA.
ID_OFFSET = {"train": 10_000, "val": 50_000, "test": 90_000}

SURNAMES = ("Smith", "Patel", "Garcia", "Nguyen", "Miller", "Okafor", "Rossi", "Kowalski", "Tanaka",
            "Dubois", "Jensen", "Moreau", "Fischer", "Silva", "Cohen", "Larsen")
COMPANIES = ("Northwind Trading", "Globex Corporation", "Acme Laboratories", "Initech Inc.",
             "Blue Ridge Tobacco", "Pioneer Foods", "Harbor Chemicals", "Summit Paper Co.")
DEPARTMENTS = ("Finance", "Research", "Legal", "Marketing", "Sales", "Operations", "Personnel", "Purchasing")
STATUSES = ("PAID", "DUE", "OVERDUE", "PENDING")
POSITIONS = ("Director", "Vice President", "Manager", "Secretary", "Treasurer", "Chairman")
CITIES = ("New York, NY", "Richmond, VA", "Chicago, IL", "Denver, CO", "Boston, MA", "Atlanta, GA")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
FILLER = ("the", "report", "of", "sales", "for", "committee", "review", "please", "find", "attached",
          "meeting", "program", "budget", "results", "research", "annual", "project", "letter", "as",
          "discussed", "samples", "shipment", "approval", "per", "your", "request", "we", "will")


@functools.lru_cache(maxsize=None)
def font(size: int, style: str = "") -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's bundled fonts; style "" / "Bold" / "Oblique"."""
    import matplotlib

    name = f"DejaVuSans-{style}.ttf" if style else "DejaVuSans.ttf"
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)


def write_docvqa_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """Write `num_train` training and `num_eval` validation (and test) questions into `manual_dir`."""
    manual_dir = Path(manual_dir)
    (manual_dir / "documents").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, num in zip(SPLITS, (num_train, num_eval, num_eval)):
        _write_split(manual_dir, split, num, rng)


def _write_split(manual_dir: Path, split: str, num_questions: int, rng: np.random.Generator) -> None:
    data, doc_index = [], 0
    while len(data) < num_questions:
        doc_id = ID_OFFSET[split] + doc_index
        ucsf_id = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=4)) + f"{doc_id % 10000:04d}"
        image_name = f"documents/{ucsf_id}_1.png"
        page, fields = _document(rng)
        page.save(manual_dir / image_name, format="PNG", compress_level=1)
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


def _document(rng: np.random.Generator) -> tuple[Image.Image, list[Field]]:
    """One page and its fields; a draw whose text ran past the bottom edge is redrawn."""
    while True:
        page = Image.new("L", PAGE_SIZE, int(rng.integers(235, 256)))
        kind: Callable = [_invoice, _letter, _form][int(rng.integers(3))]
        writer = _Writer(page, rng)
        fields = kind(writer, rng)
        if writer.y <= PAGE_SIZE[1]:
            return page, fields


class _Writer:
    """Draws lines of text down the page, tracking the cursor; sizes are drawn once per document."""

    def __init__(self, page: Image.Image, rng: np.random.Generator):
        self.draw = ImageDraw.Draw(page)
        self.rng = rng
        self.body = int(rng.integers(15, 20))
        self.margin = int(rng.integers(18, 36))
        self.y = int(rng.integers(14, 80))
        self.ink = int(rng.integers(0, 50))
        self.spacing = float(rng.uniform(1.4, 2.0))

    def line(self, text: str, size: int | None = None, style: str = "", x: int | None = None,
             advance: float | None = None) -> None:
        size = size or self.body
        self.draw.text((self.margin if x is None else x, self.y), text, fill=self.ink, font=font(size, style))
        self.y += int(size * (advance or self.spacing))

    def field(self, key: str, value: str) -> None:
        """"Key: value" with the value in a column or right after the key, as forms vary."""
        key_font = font(self.body, "Bold")
        self.draw.text((self.margin, self.y), f"{key}:", fill=self.ink, font=key_font)
        inline = self.margin + int(self.draw.textlength(f"{key}: ", font=key_font))
        x = max(inline, self.margin + 150) if self.rng.random() < 0.5 else inline
        self.line(value, x=x)

    def rule(self) -> None:
        self.draw.line([(self.margin, self.y), (PAGE_SIZE[0] - self.margin, self.y)], fill=self.ink, width=1)
        self.y += self.body // 2

    def filler(self, lines: int) -> None:
        """Lines of random words in a smaller font, each cut to the page width."""
        size, width = self.body - 3, PAGE_SIZE[0] - 2 * self.margin
        for _ in range(lines):
            words = [str(w) for w in self.rng.choice(FILLER, size=int(self.rng.integers(5, 12)))]
            while len(words) > 1 and self.draw.textlength(" ".join(words), font=font(size)) > width:
                words.pop()
            self.line(" ".join(words).capitalize(), size=size, advance=1.35)
        self.y += size // 2


def _person(rng: np.random.Generator) -> str:
    return f"{chr(ord('A') + int(rng.integers(26)))}. {rng.choice(SURNAMES)}"


def _date(rng: np.random.Generator) -> tuple[str, list[str]]:
    """A date as printed, plus the other spelling an annotator might accept."""
    year, month, day = int(rng.integers(1985, 2001)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    long_form, short_form = f"{MONTHS[month - 1]} {day}, {year}", f"{month}/{day}/{year % 100:02d}"
    shown = long_form if rng.random() < 0.5 else short_form
    return shown, [shown] + ([long_form if shown == short_form else short_form] if rng.random() < 0.4 else [])


def _amount(rng: np.random.Generator) -> tuple[str, list[str]]:
    value = f"{int(rng.integers(1, 10000)):,}.{int(rng.integers(100)):02d}"
    return f"${value}", [f"${value}"] + ([value] if rng.random() < 0.4 else [])


def _invoice(w: _Writer, rng: np.random.Generator) -> list[Field]:
    company, customer = str(rng.choice(COMPANIES)), _person(rng)
    number = f"INV-{int(rng.integers(10000, 100000))}"
    date, date_answers = _date(rng)
    total, total_answers = _amount(rng)
    status = str(rng.choice(STATUSES))
    w.line(company, size=w.body + 6, style="Bold")
    w.line("INVOICE", size=w.body + 2, style="Bold")
    w.rule()
    w.field("Invoice No", number)
    w.field("Date", date)
    w.field("Bill to", customer)
    w.filler(int(rng.integers(2, 5)))
    w.rule()
    w.field("Total", total)
    w.field("Status", status)
    return [
        ("What is the invoice number?", [number], "form"),
        ("What is the date of the invoice?", date_answers, "form"),
        ("To whom is the invoice billed?", [customer], "form"),
        ("What is the total amount?", total_answers, "form"),
        ("What is the status of the invoice?", [status, status.lower()], "form"),
        ("Which company issued the invoice?", [company], "layout"),
    ]


def _letter(w: _Writer, rng: np.random.Generator) -> list[Field]:
    company, city = str(rng.choice(COMPANIES)), str(rng.choice(CITIES))
    date, date_answers = _date(rng)
    recipient, sender, position = _person(rng), _person(rng), str(rng.choice(POSITIONS))
    w.line(company, size=w.body + 6, style="Bold")
    w.line(city, size=w.body - 2)
    w.rule()
    w.line(date)
    w.line(f"To: {recipient}")
    w.line(f"Dear {recipient.split()[-1]},")
    w.filler(int(rng.integers(3, 7)))
    w.line("Sincerely,")
    w.line(sender, style="Oblique")
    w.line(position, size=w.body - 2)
    return [
        ("What is the date mentioned in this letter?", date_answers, "layout"),
        ("To whom is this letter addressed?", [recipient], "form"),
        ("Who signed the letter?", [sender], "handwritten"),
        (f"What is the designation of {sender}?", [position], "layout"),
        ("Where is the company located?", [city], "layout"),
        ("What is the name of the company?", [company], "layout"),
    ]


def _form(w: _Writer, rng: np.random.Generator) -> list[Field]:
    department, name, approver = str(rng.choice(DEPARTMENTS)), _person(rng), _person(rng)
    phone = f"({int(rng.integers(200, 1000))}) 555-{int(rng.integers(0, 10000)):04d}"
    reference = f"RF-{int(rng.integers(1000, 10000))}"
    date, date_answers = _date(rng)
    w.line(f"{department.upper()} REQUEST FORM", size=w.body + 4, style="Bold")
    w.rule()
    w.field("Name", name)
    w.field("Department", department)
    w.field("Phone", phone)
    w.field("Date", date)
    w.filler(int(rng.integers(1, 4)))
    w.field("Reference No", reference)
    w.field("Approved by", approver)
    return [
        ("What is the name on the form?", [name], "form"),
        ("Which department is mentioned in the form?", [department], "form"),
        ("What is the phone number?", [phone], "form"),
        ("What is the date on the form?", date_answers, "form"),
        ("What is the reference number?", [reference], "form"),
        ("Who approved the request?", [approver], "form"),
    ]
