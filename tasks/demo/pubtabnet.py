"""Demo PubTabNet: small random tables drawn with Pillow, written in PubTabNet 2.0.0's own layout.

`PubTabNet_2.0.0.jsonl` (one table per line: filename, split, imgid, html.structure.tokens,
html.cells[i].tokens and, for non-empty cells, bbox = [x0, y0, x1, y1] of the cell's text in pixels)
plus `train/<filename>` and `val/<filename>` PNGs, so the same builder reads demo and real data.

The tables look like PubTabNet's: a bold header row (sometimes two levels, with a column group spanning
two columns), short words and numbers, now and then a row-spanning group label, a section row spanning
the whole table, and empty cells. They are drawn for the demo grid's resolutions: 2-3 columns, 1-2 body
rows, cell texts of 1-5 characters from a bounded vocabulary, in a 20-26 px font with tight padding, and
a table whose padded square would be wider than 8.5 font sizes is redrawn, so the x-height is at least
4 px once the table is padded square and resized to 64 px (legible) and about 2 px at 32 px (not): the
paper's finding that tables need resolution (docs/paligemma2-facts.md §2.6) has room to show between the
grid's two resolutions. `docs/demo-findings.md` §3 gives the x-height at each grid resolution.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# matplotlib ships DejaVu, so every machine has the same fonts (and the same pixels).
_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
REGULAR = _FONT_DIR / "DejaVuSans.ttf"
BOLD = _FONT_DIR / "DejaVuSans-Bold.ttf"

ANNOTATIONS = "PubTabNet_2.0.0.jsonl"

HEADER_WORDS = ("Group", "Age", "Sex", "Dose", "Mean", "SD", "Range", "Total", "Cases", "Gene", "Score",
                "Risk", "Time", "Rate", "Model", "Value", "Site", "Type", "Stage", "Grade", "BMI", "Year",
                "n", "p", "OR", "HR", "CI", "Pre", "Post")
LABEL_WORDS = ("Male", "Yes", "No", "Low", "High", "None", "Mild", "Left", "Right", "Total", "Other",
               "Urban", "Rural", "A", "B", "C", "I", "II", "III", "All")
SECTION_WORDS = ("Men", "Women", "Adults", "Cases", "Train", "Test")
FONT_SIZES = (20, 26)  # inclusive bounds, drawn once per table
MAX_SIDE_EMS = 8.5  # the padded square's side, in font sizes: x-height >= 0.547 / 8.5 of the side


@dataclass(frozen=True)
class Cell:
    """One cell as PubTabNet stores it: character tokens (inline tags like `<b>` are single tokens)."""

    tokens: tuple[str, ...]
    colspan: int = 1
    rowspan: int = 1

    @property
    def text(self) -> str:
        return "".join(t for t in self.tokens if not (t.startswith("<") and t.endswith(">") and len(t) > 1))

    @property
    def bold(self) -> bool:
        return "<b>" in self.tokens


@dataclass(frozen=True)
class Table:
    """Rows of cells, each row listing only the cells that start in it (HTML's own convention)."""

    head: tuple[tuple[Cell, ...], ...]
    body: tuple[tuple[Cell, ...], ...]
    num_cols: int


# --- random structure ------------------------------------------------------------------------------
def _number(rng: np.random.Generator) -> str:
    """A short number, 1-4 characters, in the forms tables print."""
    kind = int(rng.integers(5))
    if kind == 0:
        return str(int(rng.integers(1, 100)))
    if kind == 1:
        return f"{rng.uniform(0, 10):.1f}"
    if kind == 2:
        return f".{int(rng.integers(1, 100)):02d}"
    if kind == 3:
        return f"{int(rng.integers(0, 100))}%"
    return str(int(rng.integers(100, 1000)))


def _cell(text: str, bold: bool = False, colspan: int = 1, rowspan: int = 1) -> Cell:
    tokens = tuple(text)
    if bold and tokens:
        tokens = ("<b>",) + tokens + ("</b>",)
    return Cell(tokens, colspan, rowspan)


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def random_table(rng: np.random.Generator, body_rows: tuple[int, int] = (1, 2),
                 cols: tuple[int, int] = (2, 3)) -> Table:
    """A random table (by default small: 2-3 columns, 1-2 body rows; bounds inclusive), with spans and
    empty cells now and then."""
    num_cols = int(rng.integers(cols[0], cols[1] + 1))
    headers = [_pick(rng, HEADER_WORDS) for _ in range(num_cols)]
    if num_cols >= 3 and rng.random() < 0.3:
        # Two header levels: a group label spans columns 1-2; the other headers span both rows.
        group = _cell(_pick(rng, HEADER_WORDS), bold=True, colspan=2)
        top = [_cell(headers[0], True, rowspan=2), group]
        top += [_cell(h, True, rowspan=2) for h in headers[3:]]
        head = (tuple(top), (_cell(headers[1], True), _cell(headers[2], True)))
    else:
        first = "" if rng.random() < 0.2 else headers[0]
        head = (tuple(_cell(h, True) for h in [first] + headers[1:]),)

    body: list[tuple[Cell, ...]] = []
    num_rows = int(rng.integers(body_rows[0], body_rows[1] + 1))
    covered = 0  # body rows whose first column is still covered by a row-spanning label
    for _ in range(num_rows):
        if covered == 0 and rng.random() < 0.12:
            body.append((_cell(_pick(rng, SECTION_WORDS), bold=True, colspan=num_cols),))
            continue
        row: list[Cell] = []
        if covered:
            covered -= 1
        elif rng.random() < 0.2:
            row.append(_cell(_pick(rng, LABEL_WORDS), rowspan=2))
            covered = 1
        else:
            row.append(_cell(_pick(rng, LABEL_WORDS)))
        for _ in range(num_cols - 1):
            row.append(_cell("" if rng.random() < 0.12 else _number(rng)))
        body.append(tuple(row))
    if covered:  # the last label spans past the table: give it the missing row
        body.append(tuple(_cell(_number(rng)) for _ in range(num_cols - 1)))
    return Table(head=head, body=tuple(body), num_cols=num_cols)


# --- PubTabNet annotation ----------------------------------------------------------------------------
def _td_tokens(cell: Cell) -> list[str]:
    if cell.colspan == 1 and cell.rowspan == 1:
        return ["<td>", "</td>"]
    spans = []
    if cell.rowspan > 1:
        spans.append(f' rowspan="{cell.rowspan}"')
    if cell.colspan > 1:
        spans.append(f' colspan="{cell.colspan}"')
    return ["<td", *spans, ">", "</td>"]


def structure_tokens(table: Table) -> list[str]:
    """PubTabNet's `html.structure.tokens`: `<td>` or `<td`, ` colspan="n"`, `>`, then `</td>`."""
    tokens = []
    for section, rows in (("thead", table.head), ("tbody", table.body)):
        tokens.append(f"<{section}>")
        for row in rows:
            tokens.append("<tr>")
            for cell in row:
                tokens.extend(_td_tokens(cell))
            tokens.append("</tr>")
        tokens.append(f"</{section}>")
    return tokens


def cells_in_order(table: Table) -> list[Cell]:
    return [cell for rows in (table.head, table.body) for row in rows for cell in row]


# --- rendering ---------------------------------------------------------------------------------------
def _grid_positions(table: Table) -> list[tuple[int, int]]:
    """(row, column) of each cell's top-left corner, in document order, following HTML's span rules."""
    taken: set[tuple[int, int]] = set()
    positions = []
    for r, row in enumerate(table.head + table.body):
        c = 0
        for cell in row:
            while (r, c) in taken:
                c += 1
            positions.append((r, c))
            for dr in range(cell.rowspan):
                for dc in range(cell.colspan):
                    taken.add((r + dr, c + dc))
            c += cell.colspan
    return positions


def render(table: Table, rng: np.random.Generator,
           size: int | None = None) -> tuple[bytes, list[list[int] | None]]:
    """PNG bytes of the table and each cell's text box [x0, y0, x1, y1] (None for empty cells), in a
    `size` px font (drawn from FONT_SIZES when not given)."""
    size = size or int(rng.integers(FONT_SIZES[0], FONT_SIZES[1] + 1))
    fonts = {False: ImageFont.truetype(str(REGULAR), size), True: ImageFont.truetype(str(BOLD), size)}
    pad_x, pad_y = int(size * rng.uniform(0.2, 0.4)), int(size * rng.uniform(0.1, 0.25))
    margin = int(size * rng.uniform(0.1, 0.3))
    cells = cells_in_order(table)
    positions = _grid_positions(table)
    num_rows = len(table.head) + len(table.body)
    widths = [2 * pad_x] * table.num_cols
    text_w = [fonts[c.bold].getlength(c.text) for c in cells]
    for cell, (_, c), w in sorted(zip(cells, positions, text_w), key=lambda x: x[0].colspan):
        need = w + 2 * pad_x - sum(widths[c:c + cell.colspan])
        if need > 0:
            widths[c + cell.colspan - 1] += int(np.ceil(need))
    ascent, descent = fonts[False].getmetrics()
    row_h = ascent + descent + 2 * pad_y
    xs = np.concatenate([[margin], margin + np.cumsum(widths)]).astype(int)
    ys = [margin + r * row_h for r in range(num_rows + 1)]
    image = Image.new("RGB", (int(xs[-1]) + margin, ys[-1] + margin), "white")
    draw = ImageDraw.Draw(image)
    for y in (ys[0], ys[len(table.head)], ys[-1]):  # booktabs-style rules, as most PubMed tables
        draw.line([(xs[0], y), (xs[-1], y)], fill="black", width=1)
    boxes: list[list[int] | None] = []
    for cell, (r, c), w in zip(cells, positions, text_w):
        if not cell.text:
            boxes.append(None)
            continue
        x0, x1 = xs[c], xs[c + cell.colspan]
        x = x0 + pad_x if c == 0 else (x0 + x1 - w) / 2
        y = (ys[r] + ys[r + cell.rowspan] - ascent - descent) / 2
        draw.text((x, y), cell.text, fill="black", font=fonts[cell.bold])
        boxes.append([int(v) for v in draw.textbbox((x, y), cell.text, font=fonts[cell.bold])])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), boxes


def legible_table(rng: np.random.Generator) -> tuple[bytes, list[list[int] | None], Table]:
    """A random table drawn so that its padded square is at most MAX_SIDE_EMS font sizes a side; wider
    or taller draws are redrawn (fewer, shorter cells fit the bound more often)."""
    while True:
        table = random_table(rng)
        size = int(rng.integers(FONT_SIZES[0], FONT_SIZES[1] + 1))
        png, boxes = render(table, rng, size)
        if max(Image.open(io.BytesIO(png)).size) <= MAX_SIDE_EMS * size:
            return png, boxes, table


def annotation(table: Table, boxes: list[list[int] | None], filename: str, split: str,
               imgid: int) -> dict:
    """One line of PubTabNet_2.0.0.jsonl."""
    cells = []
    for cell, box in zip(cells_in_order(table), boxes):
        entry: dict = {"tokens": list(cell.tokens)}
        if box is not None:
            entry["bbox"] = box
        cells.append(entry)
    return {"filename": filename, "split": split, "imgid": imgid,
            "html": {"structure": {"tokens": structure_tokens(table)}, "cells": cells}}


def write_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """Write `num_train` train and `num_eval` val tables (PubTabNet's test ground truth is unreleased)."""
    manual_dir = Path(manual_dir)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num_train + num_eval):
        split = "train" if i < num_train else "val"
        filename = f"PMC{seed % 10**7:07d}_{i // 100:03d}_{i % 100:02d}.png"
        png, boxes, table = legible_table(rng)
        (manual_dir / split).mkdir(parents=True, exist_ok=True)
        (manual_dir / split / filename).write_bytes(png)
        lines.append(json.dumps(annotation(table, boxes, filename, split, i), ensure_ascii=False))
    (manual_dir / ANNOTATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")
