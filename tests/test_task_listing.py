"""`paligemma-transfer tasks --recipes` as Markdown: each value as the recipe holds it (30000 steps, not
30000.0; an unset field as None, never nan), though one column mixes tasks counted in epochs and in steps."""

from __future__ import annotations

from harness.task_listing import recipe_table
from results.tabular import markdown_rows


def test_recipe_listing_prints_integers_as_integers_and_no_nan():
    rows = recipe_table()
    text = markdown_rows(rows)
    header, _, *lines = text.splitlines()
    cells = [dict(zip(header.strip("| ").split(" | "), line.strip("| ").split(" | "))) for line in lines]
    assert len(cells) == len(rows) and "nan" not in text
    chemdraw = next(c for c in cells if (c["task"], c["size"], c["resolution"]) == ("chemdraw", "3b", "224"))
    vqav2 = next(c for c in cells if (c["task"], c["size"], c["resolution"]) == ("vqav2", "3b", "224"))
    assert (chemdraw["steps"], chemdraw["epochs"]) == ("30000", "None")
    assert (vqav2["epochs"], vqav2["steps"], vqav2["batch_size"]) == ("10", "None", "256")
    for cell, row in zip(cells, rows):
        for key in ("epochs", "steps", "batch_size", "text_len", "max_decode_len"):
            assert cell[key] == str(row[key]), (cell["task"], key)
