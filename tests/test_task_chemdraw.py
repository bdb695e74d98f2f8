"""ChemDraw plugin: MolScribe's CSV + PNG layout -> TFDS (no tensorflow) -> Examples (prefix, canonical
SMILES target) -> MolScribe's exact match; training molecules rendered while building; roles on
demo-sized data; recipe; and the errors a user sees for bad data."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rdkit import Chem

from tasks.base import DataError
from tasks.chemdraw import render_smiles
from tasks.demo.chemdraw import molecule_pools
from tasks.registry import get_task


@pytest.fixture(scope="module")
def task():
    return get_task("chemdraw")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, task):
    root = tmp_path_factory.mktemp("chemdraw_demo")
    task.write_demo(root, num_train=6, num_eval=4, seed=0)
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_demo_builds_and_reads_back_in_molscribe_layout(task, demo):
    gold = {r["file_path"]: r for r in _rows(demo / "synthetic" / "chemdraw.csv")}
    assert all(set(r) == {"image_id", "file_path", "SMILES"} for r in gold.values())
    evaluation = task.examples(demo, "eval")
    assert len(evaluation) == 4
    for ex in evaluation:
        r = gold[ex.id]  # the id is the image file as the CSV names it
        assert ex.id.startswith("synthetic/chemdraw/") and ex.prefix == "smiles"
        assert ex.targets == (Chem.MolToSmiles(Chem.MolFromSmiles(r["SMILES"])),)
        assert ex.reference == {"smiles": r["SMILES"]}
        drawing = Image.open(demo / ex.id)
        assert ex.image.shape == (drawing.height, drawing.width, 3) and ex.image.dtype == np.uint8
    train = task.examples(demo, "train")
    train_smiles = [r["SMILES"] for r in _rows(demo / "pubchem" / "train_pubchem.csv")]
    assert {ex.targets[0] for ex in train} <= set(train_smiles)
    assert all(240 <= ex.image.shape[0] <= 400 and 240 <= ex.image.shape[1] <= 400 for ex in train)
    # Roles on 6 training molecules: the 1% holdout keeps one; eval and test are the benchmark.
    sizes = {role: len(task.examples(demo, role)) for role in ("train", "minival", "eval", "test")}
    assert sizes == {"train": 5, "minival": 1, "eval": 4, "test": 4}


def test_ground_truth_scores_perfect(task, demo):
    examples = task.examples(demo, "eval")
    scores = task.score({ex.id: task.parse(ex.targets[0]) for ex in examples}, task.references(demo, "eval"))
    assert scores.metrics["canon_smiles"] == 1.0 and scores.metrics["canon_smiles_em"] == 1.0
    assert scores.num_examples == 4 and scores.num_unparsable == 0


def test_demo_is_deterministic_varies_with_the_seed_and_never_trains_on_eval_molecules(task, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        task.write_demo(tmp_path / name, num_train=20, num_eval=5, seed=seed)
    for rel in ("pubchem/train_pubchem.csv", "synthetic/chemdraw.csv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()
    train_pool, eval_pool = molecule_pools()
    assert not set(train_pool) & set(eval_pool) and len(train_pool) > 2000
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= 15 for s in train_pool + eval_pool)
    assert render_smiles("CCO", seed=1) == render_smiles("CCO", seed=1) != render_smiles("CCO", seed=2)


def _write_tiny(root: Path, gold: list[tuple[str, str]], train: list[str]) -> None:
    """MolScribe layout by hand: benchmark rows (image_id, SMILES) with blank drawings; training SMILES."""
    (root / "synthetic" / "chemdraw").mkdir(parents=True)
    (root / "pubchem").mkdir()
    with open(root / "synthetic" / "chemdraw.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "file_path", "SMILES"])
        for image_id, smiles in gold:
            Image.new("RGB", (60, 40), "white").save(root / "synthetic" / "chemdraw" / f"{image_id}.png")
            writer.writerow([image_id, f"synthetic/chemdraw/{image_id}.png", smiles])
    with open(root / "pubchem" / "train_pubchem.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["SMILES"])
        writer.writerows([s] for s in train)


def test_damaged_and_unparsable_predictions(task, tmp_path):
    _write_tiny(tmp_path, [("a", "C[C@H](N)O"), ("b", "C/C=C/C"), ("c", "CCO"), ("d", "c1ccccc1")],
                ["CCO", "not a molecule", "CCN"])
    assert len(task.examples(tmp_path, "train")) + len(task.examples(tmp_path, "minival")) == 2
    refs = task.references(tmp_path, "eval")
    # a: R/S flipped (miss); b: E/Z flipped (hit: cis/trans ignored); c: atoms reordered (hit);
    # d: unparsable (miss, counted). canon_smiles 2/4, canon_smiles_em 1/4, graph 3/4.
    preds = {"synthetic/chemdraw/a.png": task.parse(" C[C@@H](N)O\n"),
             "synthetic/chemdraw/b.png": task.parse("C/C=C\\C"),
             "synthetic/chemdraw/c.png": task.parse("OCC"),
             "synthetic/chemdraw/d.png": task.parse("c1ccc")}
    scores = task.score(preds, refs)
    assert scores.metrics["canon_smiles"] == 0.5 and scores.metrics["canon_smiles_em"] == 0.25
    assert scores.metrics["graph"] == 0.75 and scores.metrics["chiral"] == 0.0
    assert scores.num_unparsable == 1
    assert scores.extra["per_example"] == {f"synthetic/chemdraw/{k}.png": hit for k, hit in
                                           (("a", False), ("b", True), ("c", True), ("d", False))}
    # Missing and non-text predictions are misses, never crashes.
    missing = task.score({"synthetic/chemdraw/c.png": task.parse(None)}, refs)
    assert missing.metrics["canon_smiles"] == 0.0 and missing.num_unparsable == 4


def test_a_training_row_with_a_file_path_uses_its_image(task, tmp_path):
    _write_tiny(tmp_path, [("a", "CCO")], [])
    (tmp_path / "pubchem" / "train_pubchem.csv").write_text(
        "image_id,file_path,SMILES\nx,synthetic/chemdraw/a.png,CCO\ny,,CCN\n")
    by_id = {ex.id: ex for role in ("train", "minival") for ex in task.examples(tmp_path, role)}
    assert by_id["synthetic/chemdraw/a.png"].image.shape == (40, 60, 3)  # the file, not a rendering
    assert by_id["y"].image.shape[0] >= 240  # rendered


def test_missing_manual_dir_and_files_show_the_download_instructions(task, tmp_path):
    with pytest.raises(DataError, match=r"nowhere is missing or empty(.|\n)*MolScribe"):
        task.examples(tmp_path / "nowhere", "train")
    _write_tiny(tmp_path, [("a", "CCO")], ["CCO"])
    (tmp_path / "pubchem" / "train_pubchem.csv").unlink()
    assert len(task.examples(tmp_path, "eval")) == 1  # scoring needs only the eval split's files
    with pytest.raises(DataError, match=r"train_pubchem.csv is missing(.|\n)*pubchem.zip"):
        task.examples(tmp_path, "train")


def test_malformed_csv_names_file_line_and_columns(task, tmp_path):
    _write_tiny(tmp_path, [("a", "CCO"), ("b", "CCN")], ["CCO"])
    path = tmp_path / "synthetic" / "chemdraw.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [lines[2] + ",extra"]) + "\n")
    with pytest.raises(DataError, match=r"chemdraw.csv:3: expected 3 fields \(image_id,file_path,SMILES\), "
                                        r"got 4"):
        task.examples(tmp_path, "eval")
    path.write_text("\n".join(lines[:2] + ["b,synthetic/chemdraw/b.png"]) + "\n")
    with pytest.raises(DataError, match=r"chemdraw.csv:3: expected 3 fields .*got 2"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds2")
    path.write_text("image_id,path,SMILES\na,synthetic/chemdraw/a.png,CCO\n")
    with pytest.raises(DataError, match=r"chemdraw.csv:1: missing column\(s\) \['file_path'\]"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds3")
    path.write_text("image_id,file_path,SMILES\na,synthetic/chemdraw/nope.png,CCO\n")
    with pytest.raises(DataError, match=r"chemdraw.csv:2: image .*nope.png is missing"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds4")
    path.write_text("image_id,file_path,SMILES\na,synthetic/chemdraw/a.png,CCO\n")
    (tmp_path / "pubchem" / "train_pubchem.csv").write_text("SMILES\nnot a molecule\n")
    with pytest.raises(DataError, match=r"train_pubchem.csv: no usable rows"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds5")


def test_recipe_is_the_appendix_b_molecule_recipe(task):
    recipes = [task.recipe(size, res) for size in ("3b", "10b", "28b") for res in (224, 448, 896)]
    assert all(r == recipes[0] for r in recipes)
    r = recipes[0]
    assert (r.steps, r.batch_size, r.lr, r.label_smoothing) == (30_000, 256, 1e-4, 0.1)
    assert (r.max_decode_len, r.text_len, r.pad_to_square, r.decode) == (256, 264, True, "greedy")
    assert task.recipe("nano-l", 128) == r.replace(sweep_resolution=64)
    assert (r.lr_grid, r.sweep_resolution) == ((1e-4,), 448)  # one lr in the paper, tuned at 448 px
    with pytest.raises(KeyError, match="unknown model size '2b'"):
        task.recipe("2b", 224)


def test_training_molecules_are_redrawn_per_seed(tmp_path):
    """Each (seed, step, row) draws the molecule afresh (Indigo or RDKit, MolScribe-style augmentation);
    the same seed draws the same pixels, so a resumed run sees what the interrupted one would have."""
    from tasks.chemdraw import ChemDraw
    from tasks.chemdraw_drawing import render
    from tasks.registry import get_task

    task = get_task("chemdraw")
    assert isinstance(task, ChemDraw)
    task.write_demo(tmp_path / "raw", num_train=3, num_eval=2, seed=0)
    ex = task.examples(tmp_path / "raw", "train", tmp_path / "prep")[0]
    epoch0, again, epoch1 = (task.train_image(ex, s) for s in ((0, 0, 5), (0, 0, 5), (0, 1, 5)))
    assert epoch0.dtype == np.uint8 and epoch0.ndim == 3 and epoch0.shape[2] == 3
    np.testing.assert_array_equal(epoch0, again)
    assert epoch0.shape != epoch1.shape or not np.array_equal(epoch0, epoch1)
    drawings = [render("CC(=O)Nc1ccc(O)cc1", (7, step)) for step in range(8)]
    assert len({d.tobytes() for d in drawings}) == 8
    assert render("not a molecule", (0,)) is None
    benchmark = task.examples(tmp_path / "raw", "eval", tmp_path / "prep")[0]
    assert task.train_image(benchmark, (0, 0, 0)) is None  # an image file is never redrawn
