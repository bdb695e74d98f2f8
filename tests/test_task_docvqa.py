"""DocVQA plugin: RRC raw layout -> TFDS (no tensorflow) -> Examples -> ANLS; roles on demo-sized data;
recipe; the demo's resolution sensitivity; and the errors a user sees for bad data."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.base import DataError
from tasks.registry import get_task


@pytest.fixture(scope="module")
def task():
    return get_task("docvqa")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, task):
    root = tmp_path_factory.mktemp("docvqa_demo")
    task.write_demo(root, num_train=8, num_eval=4, seed=0)
    return root


def test_demo_builds_and_reads_back_in_the_rrc_format(task, demo):
    raw = {r["questionId"]: r for r in json.loads((demo / "val_v1.0_withQT.json").read_text())["data"]}
    assert json.loads((demo / "val_v1.0_withQT.json").read_text())["dataset_split"] == "val"
    val = task.examples(demo, "eval")
    assert len(val) == 4
    for ex in val:
        r = raw[int(ex.id)]
        assert ex.prefix == r["question"] and not ex.prefix.startswith("answer en")
        assert ex.targets == tuple(r["answers"]) and ex.reference == {"answers": r["answers"]}
        page = Image.open(demo / r["image"])
        assert ex.image.shape == (page.height, page.width, 3) and ex.image.dtype == np.uint8
    # Roles on 8 training questions: 5% rounds to 0, but the holdout keeps one question.
    train, minival = task.examples(demo, "train"), task.examples(demo, "minival")
    assert (len(train), len(minival)) == (7, 1)
    assert not {ex.id for ex in train} & {ex.id for ex in minival}
    test = task.examples(demo, "test")
    assert len(test) == 4 and all(ex.targets == () for ex in test)


def test_ground_truth_scores_perfect(task, demo):
    refs = task.references(demo, "eval")
    scores = task.score({i: r["answers"][0] for i, r in refs.items()}, refs)
    assert scores.metrics == {"anls": 1.0, "anls_bv": 1.0} and scores.num_examples == 4


def test_demo_is_deterministic_and_varies_with_the_seed(task, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        task.write_demo(tmp_path / name, num_train=5, num_eval=2, seed=seed)
    qa = "train_v1.0_withQT.json"
    assert (tmp_path / "a" / qa).read_bytes() == (tmp_path / "b" / qa).read_bytes()
    assert (tmp_path / "a" / qa).read_bytes() != (tmp_path / "c" / qa).read_bytes()
    data = json.loads((tmp_path / "a" / qa).read_text())["data"]
    assert len(data) == 5 and all((tmp_path / "a" / r["image"]).is_file() for r in data)
    pages = [np.asarray(Image.open(tmp_path / "a" / r["image"])) for r in data]
    assert all(p.shape == (192, 192) for p in pages)


def test_demo_text_needs_resolution(demo):
    """The values (the words the field questions ask for; ink boxes of the release-format OCR file) are
    ~8.7 px tall once a page is resized to 64 px and ~4.3 px at 32 px: digits legible at the grid's high
    resolution, not at its low one (the paper's resolution sensitivity of text-heavy tasks). The keys are
    small print, like a form's labels."""
    values, keys = [], []
    for path in sorted((demo / "ocr_results").iterdir()):
        result = json.loads(path.read_text())["recognitionResults"][0]
        assert (result["width"], result["height"]) == (192, 192)
        for line in result["lines"]:
            box = line["boundingBox"]
            assert 0 <= min(box) and max(box[0::2]) < 192 and max(box[1::2]) < 192
        for line in result["lines"][1:]:
            key, value = (w["boundingBox"] for w in line["words"])
            keys.append((key[5] - key[1]) / result["height"])
            values.append((value[5] - value[1]) / result["height"])
    assert len(values) >= 4 * 2
    assert np.median(values) * 64 > 7.5 and np.median(values) * 32 < 5.0  # cap top to descender
    assert np.median(keys) * 64 < 4.0


def test_demo_ocr_file_holds_every_answer(demo):
    """Every answer of a page is a word of its OCR file (the OCR mixture and the QA agree)."""
    data = json.loads((demo / "train_v1.0_withQT.json").read_text())["data"]
    for r in data:
        ocr = json.loads((demo / "ocr_results" / f"{r['ucsf_document_id']}_1.json").read_text())
        words = {w["text"] for line in ocr["recognitionResults"][0]["lines"] for w in line["words"]}
        assert r["answers"][0] in words, (r["answers"], words)


def _write_tiny(root: Path, answers_and_modes):
    """Hand-written RRC files: one val question per (answers, image mode), one train question."""
    (root / "documents").mkdir(parents=True)
    for split, items in (("train", [(["x"], "L")]), ("val", answers_and_modes)):
        data = []
        for i, (answers, mode) in enumerate(items):
            qid = (1 if split == "train" else 2) * 1000 + i
            Image.new(mode, (50 + i, 60), 200).save(root / "documents" / f"doc{qid}_1.png")
            data.append({"questionId": qid, "question": f"What is field {i}?", "question_types": ["form"],
                         "image": f"documents/doc{qid}_1.png", "docId": qid, "answers": answers})
        (root / f"{split}_v1.0_withQT.json").write_text(json.dumps({"dataset_name": "docvqa", "data": data}))


def test_hand_written_files_and_a_damaged_prediction(task, tmp_path):
    _write_tiny(tmp_path, [(["1/8/93", "1/8/1993"], "L"), (["INV-12345"], "RGB"), (["Finance"], "P"),
                           (["Finance"], "LA")])
    examples = {ex.id: ex for ex in task.examples(tmp_path, "eval")}
    shapes = [examples[k].image.shape for k in sorted(examples)]
    assert shapes == [(60, 50 + i, 3) for i in range(4)]  # L, RGB, P and LA all read back as RGB
    refs = task.references(tmp_path, "eval")
    # "1/8/93": exact -> 1. "INV-12346": 1 edit over 9 -> 8/9. "fin" vs "finance": 4 edits over 7 -> NL 0.57
    # -> 0. "  Finance ": RRC strips (distance 0) -> 1; BV keeps the 3 spaces: 3 edits over 10 -> 0.7.
    damaged = task.score({"2000": "1/8/93", "2001": "INV-12346", "2002": "fin", "2003": "  Finance "}, refs)
    assert damaged.metrics["anls"] == pytest.approx((1 + 8 / 9 + 0 + 1) / 4)
    assert damaged.metrics["anls_bv"] == pytest.approx((1 + 8 / 9 + 0 + 0.7) / 4)
    assert damaged.extra["per_example"]["2001"] == pytest.approx(8 / 9)


def test_per_split_layout_and_the_test_file_without_question_types(task, tmp_path):
    _write_tiny(tmp_path / "train", [(["a"], "L")])
    (tmp_path / "train" / "val_v1.0_withQT.json").rename(tmp_path / "val_v1.0_withQT.json")
    (tmp_path / "documents").symlink_to(tmp_path / "train" / "documents")
    data = json.loads((tmp_path / "val_v1.0_withQT.json").read_text())["data"]
    for r in data:
        del r["answers"], r["question_types"]
    (tmp_path / "test_v1.0.json").write_text(json.dumps({"data": data}))
    assert len(task.examples(tmp_path, "train")) == 1  # train/train_v1.0_withQT.json + train/documents
    (test,) = task.examples(tmp_path, "test")
    assert test.id == "2000" and test.targets == ()


def test_unparsable_and_missing_predictions_are_misses(task, tmp_path):
    _write_tiny(tmp_path, [(["a"], "L"), (["b"], "L")])
    refs = task.references(tmp_path, "eval")
    assert task.parse(None) is None and task.parse(" Finance ") == " Finance "
    scores = task.score({"2000": task.parse(None)}, refs)  # 2001 has no prediction at all
    assert scores.metrics["anls"] == 0.0 and scores.num_unparsable == 1 and scores.num_examples == 2


def test_scoring_the_test_split_says_why_it_cannot(task, demo):
    with pytest.raises(DataError, match="evaluation server"):
        task.score({}, task.references(demo, "test"))


def test_missing_manual_dir_shows_the_download_instructions(task, tmp_path):
    with pytest.raises(DataError, match=r"nowhere is missing or empty(.|\n)*rrc.cvc.uab.es(.|\n)*train_v1.0"):
        task.examples(tmp_path / "nowhere", "train")


def test_missing_split_file_is_named(task, tmp_path):
    _write_tiny(tmp_path, [(["a"], "L")])
    (tmp_path / "val_v1.0_withQT.json").unlink()
    assert len(task.examples(tmp_path, "train")) >= 0  # only the splits a role reads are needed
    with pytest.raises(DataError, match=r"val_v1.0_withQT.json is missing(.|\n)*Task 1"):
        task.examples(tmp_path, "eval")


def test_malformed_json_names_file_and_line(task, tmp_path):
    _write_tiny(tmp_path, [(["a"], "L")])
    (tmp_path / "val_v1.0_withQT.json").write_text('{"data": [\n\n  {"questionId": 1,, }\n]}')
    with pytest.raises(DataError, match=r"val_v1.0_withQT.json:3:\d+: malformed JSON"):
        task.examples(tmp_path, "eval")


def test_bad_records_name_file_record_and_field(task, tmp_path):
    _write_tiny(tmp_path, [(["a"], "L")])
    path = tmp_path / "val_v1.0_withQT.json"
    record = {"questionId": 5, "question": "q?", "image": "documents/doc2000_1.png", "docId": 1}
    path.write_text(json.dumps({"data": [record]}))
    with pytest.raises(DataError, match=r"val_v1.0_withQT.json: data\[0\]: missing field 'answers'"):
        task.examples(tmp_path, "eval")
    path.write_text(json.dumps({"data": [dict(record, answers=[3])]}))
    with pytest.raises(DataError, match=r"data\[0\].answers\[0\]: expected a string, got int"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds2")
    path.write_text(json.dumps({"data": [dict(record, answers=["a"], image="documents/nope.png")]}))
    with pytest.raises(DataError, match=r"data\[0\]: image .*nope.png \(questionId 5\) is missing"):
        task.examples(tmp_path, "eval", data_dir=tmp_path / "_tfds3")


def test_recipe_follows_big_vision_sweep_best(task):
    recipes = [task.recipe(size, res) for size in ("3b", "10b", "28b") for res in (224, 448, 896)]
    assert all(r == recipes[0] for r in recipes)
    r = recipes[0]
    assert (r.epochs, r.batch_size, r.lr, r.weight_decay) == (10, 256, 1e-5, 1e-6)
    assert (r.text_len, r.decode, r.max_decode_len) == (32, "greedy", 32)
    assert task.recipe("nano-m", 128) == r
    with pytest.raises(KeyError, match="resolution 300 is not in the paligemma2 family"):
        task.recipe("3b", 300)


def test_ocr_view_is_each_page_with_its_lines(task, demo):
    pages = task.ocr_examples(demo, "train")
    data = json.loads((demo / "train_v1.0_withQT.json").read_text())["data"]
    assert len(pages) == len({r["image"] for r in data})
    for r in data:
        (page,) = [p for p in pages if p.id == Path(r["image"]).stem]
        assert page.prefix == "ocr" and page.targets[0].split()[0].isupper()  # the title comes first
        assert r["answers"][0] in page.targets[0].split()
        assert page.image.shape == (192, 192, 3)
