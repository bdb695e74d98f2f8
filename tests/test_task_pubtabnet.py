"""PubTabNet plugin: official JSONL + PNG layout -> TFDS (no tensorflow) -> Examples (prefix, HTML target
with loc-token coords) -> TEDS / S-TEDS; roles on demo-sized data; recipe; the demo's resolution
sensitivity; and the errors a user sees for bad data."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.base import DataError
from tasks.registry import get_task


@pytest.fixture(scope="module")
def task():
    return get_task("pubtabnet")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, task):
    root = tmp_path_factory.mktemp("pubtabnet_demo")
    task.write_demo(root, num_train=6, num_eval=4, seed=0)
    return root


def _lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "PubTabNet_2.0.0.jsonl").read_text().splitlines()]


def test_demo_builds_and_reads_back_in_the_official_format(task, demo):
    raw = {r["filename"]: r for r in _lines(demo)}
    assert sorted(r["split"] for r in raw.values()) == ["train"] * 6 + ["val"] * 4
    val = task.examples(demo, "eval")
    assert len(val) == 4
    for ex in val:
        r = raw[ex.id]
        assert r["split"] == "val" and ex.prefix == "table html"
        page = Image.open(demo / "val" / ex.id)
        assert ex.image.shape == (page.height, page.width, 3) and ex.image.dtype == np.uint8
        (target,) = ex.targets
        non_empty = sum(bool(c["tokens"]) for c in r["html"]["cells"])
        assert target.count(' coords="') == non_empty and target.count("<loc") == 4 * non_empty
        assert target.startswith("<thead><tr><td") and target.endswith("</tbody>")
        assert ex.reference["html"].startswith("<html><body><table><thead>")
        assert ex.reference["complex"] == any("span" in t for t in r["html"]["structure"]["tokens"])
    # Roles on demo-sized data: minival is the last of the 6 train tables; eval and test read val.
    sizes = {role: len(task.examples(demo, role)) for role in ("train", "minival", "eval", "test")}
    assert sizes == {"train": 5, "minival": 1, "eval": 4, "test": 4}


def test_minival_is_carved_from_train_and_shares_no_table_with_eval(task, demo):
    ids = {role: {ex.id for ex in task.examples(demo, role)} for role in ("train", "minival", "eval")}
    assert ids["minival"] and not ids["minival"] & ids["eval"] and not ids["minival"] & ids["train"]
    raw = {r["filename"]: r["split"] for r in _lines(demo)}
    assert {raw[i] for i in ids["minival"]} == {"train"} and {raw[i] for i in ids["eval"]} == {"val"}


def test_ground_truth_scores_perfect(task, demo):
    examples = task.examples(demo, "eval")
    refs = task.references(demo, "eval")
    scores = task.score({ex.id: task.parse(ex.targets[0]) for ex in examples}, refs)
    assert scores.metrics["teds"] == 1.0 and scores.metrics["s_teds"] == 1.0
    assert scores.num_examples == 4 and scores.num_unparsable == 0


def test_demo_is_deterministic_and_varies_with_the_seed(task, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        task.write_demo(tmp_path / name, num_train=5, num_eval=2, seed=seed)
    jsonl = "PubTabNet_2.0.0.jsonl"
    assert (tmp_path / "a" / jsonl).read_bytes() == (tmp_path / "b" / jsonl).read_bytes()
    assert (tmp_path / "a" / jsonl).read_bytes() != (tmp_path / "c" / jsonl).read_bytes()
    for r in _lines(tmp_path / "a"):
        image = Image.open(tmp_path / "a" / r["split"] / r["filename"])
        for cell in r["html"]["cells"]:
            assert ("bbox" in cell) == bool(cell["tokens"])
            if "bbox" in cell:
                x0, y0, x1, y1 = cell["bbox"]
                assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height


def test_ocr_view_reads_the_cells_in_order(task, demo):
    raw = {r["filename"]: r for r in _lines(demo)}
    for ex in task.ocr_examples(demo, "eval"):
        cells = ["".join(t for t in c["tokens"] if len(t) == 1) for c in raw[ex.id]["html"]["cells"]]
        assert ex.prefix == "ocr" and ex.targets[0] == " ".join(c for c in cells if c)


def test_demo_text_needs_resolution(tmp_path, task):
    """Cell text boxes are ~6-9 px tall once a table is padded square and resized to 64 px, ~3-4 px at
    32 px (x-heights about half that): legible at the grid's high resolution, not at its low one."""
    task.write_demo(tmp_path, num_train=30, num_eval=0, seed=1)
    heights = []
    for r in _lines(tmp_path):
        side = max(Image.open(tmp_path / "train" / r["filename"]).size)
        heights += [(c["bbox"][3] - c["bbox"][1]) / side for c in r["html"]["cells"] if "bbox" in c]
    assert np.median(heights) * 64 > 6 and np.median(heights) * 32 < 4.5


def _write_tiny(root: Path, tables: list[dict]) -> None:
    """Hand-written PubTabNet files: each table is (filename, split, structure tokens, cells, size)."""
    lines = []
    for k, t in enumerate(tables):
        (root / t["split"]).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", t.get("size", (200, 100)), "white").save(root / t["split"] / t["filename"])
        lines.append(json.dumps({"filename": t["filename"], "split": t["split"], "imgid": k,
                                 "html": {"structure": {"tokens": t["structure"]}, "cells": t["cells"]}}))
    (root / "PubTabNet_2.0.0.jsonl").write_text("\n".join(lines) + "\n")


# A 2-column table: bold header "Age" (boxed) + empty header cell; body row "12" | "<5" with "<5"
# spanning two rows. 8 elements under <table>: thead tr td td tbody tr td td (+1 <b> = 9).
STRUCTURE = ["<thead>", "<tr>", "<td>", "</td>", "<td>", "</td>", "</tr>", "</thead>", "<tbody>", "<tr>",
             "<td>", "</td>", "<td", ' rowspan="2"', ">", "</td>", "</tr>", "</tbody>"]
CELLS = [{"tokens": ["<b>", "A", "g", "e", "</b>"], "bbox": [10, 20, 50, 40]}, {"tokens": []},
         {"tokens": ["1", "2"], "bbox": [10, 60, 30, 80]}, {"tokens": ["<", "5"], "bbox": [100, 60, 130, 80]}]
TABLE = {"filename": "PMC1_000_00.png", "split": "val", "structure": STRUCTURE, "cells": CELLS}


def test_hand_written_table_prefix_target_and_reference(task, tmp_path):
    _write_tiny(tmp_path, [dict(TABLE, split="train", filename="t.png"), TABLE])
    (ex,) = task.examples(tmp_path, "eval")
    assert ex.id == "PMC1_000_00.png" and ex.prefix == "table html"
    # 200 x 100 image padded to 200 x 200: x / 200 * 1023 rounded, e.g. 10 -> 51, 50 -> 256, 40 -> 205.
    assert ex.targets == (
        '<thead><tr><td coords="<loc0051><loc0102><loc0256><loc0205>"><b>Age</b></td><td></td></tr>'
        '</thead><tbody><tr><td coords="<loc0051><loc0307><loc0153><loc0409>">12</td>'
        '<td rowspan="2" coords="<loc0512><loc0307><loc0665><loc0409>">&lt;5</td></tr></tbody>',)
    assert ex.reference == {"complex": True, "html": (
        "<html><body><table><thead><tr><td><b>Age</b></td><td></td></tr></thead><tbody><tr><td>12</td>"
        '<td rowspan="2">&lt;5</td></tr></tbody></table></body></html>')}


def test_damaged_and_unparsable_predictions(task, tmp_path):
    second = dict(TABLE, filename="PMC2_000_00.png")
    _write_tiny(tmp_path, [dict(TABLE, split="train", filename="t.png"), TABLE, second])
    examples = {ex.id: ex for ex in task.examples(tmp_path, "eval")}
    refs = task.references(tmp_path, "eval")
    target = examples["PMC1_000_00.png"].targets[0]
    # "12" -> "13": rename cost 1/2 over N = 9 elements (the <b> counts) -> TEDS 1 - 0.5/9, S-TEDS 1.
    damaged = {"PMC1_000_00.png": task.parse(target.replace(">12<", ">13<")),
               "PMC2_000_00.png": task.parse(target.replace('rowspan="2"', 'rowspan="two"'))}
    scores = task.score(damaged, refs)
    assert scores.extra["per_example"]["PMC1_000_00.png"] == {"teds": pytest.approx(1 - 0.5 / 9),
                                                               "s_teds": 1.0}
    assert scores.extra["per_example"]["PMC2_000_00.png"] == {"teds": 0.0, "s_teds": 0.0}
    assert scores.num_unparsable == 1 and scores.extra["unparsable"] == ["PMC2_000_00.png"]
    assert scores.metrics["teds"] == pytest.approx((1 - 0.5 / 9) / 2)
    assert scores.metrics["teds_complex"] == scores.metrics["teds"] and "teds_simple" not in scores.metrics
    # A missing prediction is an empty table: 8 insertions, but N = 9 counts the <b>, which is no tree
    # node (the official quirk), so it scores 1/9, not 0. Junk and cut-off coords never crash.
    empty = pytest.approx(1 - 8 / 9)
    assert task.score({}, refs).metrics == {"teds": empty, "s_teds": empty, "teds_complex": empty}
    for junk in ("", "<<<>>>", "<td coords=\"<loc0001><loc00", "\x00", "</table></body><p>x"):
        task.score({"PMC1_000_00.png": task.parse(junk)}, refs)
    assert task.score({"PMC1_000_00.png": None}, refs).num_unparsable == 1
    cut = target.replace('"><b>Age', "><b>Age", 1)  # the first coords attribute lost its closing quote
    assert task.parse(cut) == task.parse(target.replace(' coords="<loc0051><loc0102><loc0256><loc0205>"', ""))


def test_overlapping_boxes_drop_training_tables_only(task, tmp_path):
    overlap = [dict(c) for c in CELLS]
    overlap[2] = dict(overlap[2], bbox=[20, 30, 60, 70])  # intersects the first box
    _write_tiny(tmp_path, [dict(TABLE, split="train", filename="a.png", cells=overlap),
                           dict(TABLE, split="train", filename="b.png"),
                           dict(TABLE, split="train", filename="c.png"),
                           dict(TABLE, cells=overlap)])
    assert [ex.id for ex in task.examples(tmp_path, "train")] == ["b.png"]
    assert [ex.id for ex in task.examples(tmp_path, "minival")] == ["c.png"]
    assert len(task.examples(tmp_path, "eval")) == 1
    _write_tiny(tmp_path, [dict(TABLE, split="train", filename="a.png", cells=overlap), TABLE])
    with pytest.raises(DataError, match=r"every train table is dropped \(1 overlapping cell boxes\)"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds2")


def test_invalid_tables_are_dropped_and_counted(task, tmp_path, capsys):
    unclosed = STRUCTURE[:-1]  # </tbody> missing
    _write_tiny(tmp_path, [dict(TABLE, split="train", filename="a.png", cells=CELLS[:3]),  # 4 slots, 3 cells
                           dict(TABLE, split="train", filename="b.png"),
                           dict(TABLE, split="train", filename="c.png"),
                           dict(TABLE, filename="v.png", structure=unclosed),
                           TABLE])
    builder = task.prepare(tmp_path, tmp_path / "_tfds")
    assert builder.info.metadata["dropped"] == {"train": {"invalid structure": 1}, "val": {"invalid structure": 1}}
    assert "pubtabnet: dropped 1 of 3 train tables (1 invalid structure); 1 of 2 val tables" in capsys.readouterr().err
    assert [ex.id for ex in task.examples(tmp_path, "train", tmp_path / "_tfds")] == ["b.png"]
    assert [ex.id for ex in task.examples(tmp_path, "eval", tmp_path / "_tfds")] == [TABLE["filename"]]
    # Read back from the prepared folder, the counts are still there.
    assert task.prepare(tmp_path, tmp_path / "_tfds").info.metadata["dropped"]["val"] == {"invalid structure": 1}


def test_structure_problems():
    from tasks.pubtabnet import structure_problem

    def ann(structure, cells=CELLS):
        return {"html": {"structure": {"tokens": structure}, "cells": cells}}

    assert structure_problem(ann(STRUCTURE)) is None
    assert "4 cells but html.cells has 3" in structure_problem(ann(STRUCTURE, CELLS[:3]))
    assert "leaves <tbody> open" in structure_problem(ann(STRUCTURE[:-1]))
    assert "closes </tr>" in structure_problem(ann(["<tr>", "<td>", "</td>", "</tr>", "</tr>"], CELLS[:1]))


def test_missing_manual_dir_shows_the_download_instructions(task, tmp_path):
    with pytest.raises(DataError, match=r"nowhere is missing or empty(.|\n)*pubtabnet.tar.gz"):
        task.examples(tmp_path / "nowhere", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"PubTabNet_2.0.0.jsonl is missing(.|\n)*curl"):
        task.examples(tmp_path, "train")


def test_malformed_jsonl_line_names_file_and_line(task, tmp_path):
    _write_tiny(tmp_path, [TABLE])
    path = tmp_path / "PubTabNet_2.0.0.jsonl"
    path.write_text(path.read_text() + '{"filename": "x.png", "split": \n')
    with pytest.raises(DataError, match=r"PubTabNet_2.0.0.jsonl:2: malformed JSON line"):
        task.examples(tmp_path, "eval")


def test_bad_records_name_file_line_and_field(task, tmp_path):
    _write_tiny(tmp_path, [dict(TABLE, cells=CELLS[:3])])
    with pytest.raises(DataError, match=r"jsonl: every val table is dropped \(1 invalid structure\)"):
        task.examples(tmp_path, "eval")
    _write_tiny(tmp_path, [dict(TABLE, cells=[dict(CELLS[0], bbox=[1, 2])] + CELLS[1:])])
    with pytest.raises(DataError, match=r"jsonl:1.html.cells\[0\]: bbox should be \[x0, y0, x1, y1\]"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds2")
    _write_tiny(tmp_path, [TABLE])
    (tmp_path / "val" / TABLE["filename"]).unlink()
    with pytest.raises(DataError, match=r"jsonl:1: image .*PMC1_000_00.png is missing"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds3")
    record = json.loads((tmp_path / "PubTabNet_2.0.0.jsonl").read_text())
    del record["split"]
    (tmp_path / "PubTabNet_2.0.0.jsonl").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"jsonl:1: missing field 'split'"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds4")


def test_recipe_is_the_appendix_b_table_recipe(task):
    recipes = [task.recipe(size, res) for size in ("3b", "10b", "28b") for res in (224, 448, 896)]
    assert all(r == recipes[0] for r in recipes)
    r = recipes[0]
    assert (r.steps, r.batch_size, r.lr, r.label_smoothing) == (15_000, 256, 1e-4, 0.0)
    assert (r.max_decode_len, r.text_len, r.pad_to_square, r.decode) == (4096, 4104, True, "greedy")
    assert 1e-4 in r.lr_grid and (r.sweep_resolution, r.sweep_per_point) == (896, False)
    assert task.recipe("nano-s", 32) == r.replace(sweep_resolution=128)
    with pytest.raises(KeyError, match="resolution 300 is not in the paligemma2 family"):
        task.recipe("3b", 300)
