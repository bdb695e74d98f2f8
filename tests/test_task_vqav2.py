"""VQAv2 plugin: official raw layout -> TFDS (no tensorflow) -> Examples -> scores; roles on demo-sized
data; recipe; and the errors a user sees for bad data."""

import collections
import json
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tasks.base import DataError, paper_point
from tasks.registry import get_task
from tasks.splits import resolve_split


@pytest.fixture(scope="module")
def task():
    return get_task("vqav2")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, task):
    root = tmp_path_factory.mktemp("vqav2_demo")
    task.write_demo(root, num_train=6, num_eval=4, seed=0)
    return root


def _raw(root: Path, subtype: str):
    questions = json.loads((root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").read_text())["questions"]
    annotations = json.loads((root / f"v2_mscoco_{subtype}_annotations.json").read_text())["annotations"]
    return {q["question_id"]: q for q in questions}, {a["question_id"]: a for a in annotations}


def test_demo_builds_and_reads_back_in_the_official_format(task, demo):
    questions, annotations = _raw(demo, "val2014")
    minival = task.examples(demo, "minival")
    assert len(minival) == 4
    assert len(task.examples(demo, "train")) == 6 and len(task.examples(demo, "test")) == 4
    for ex in minival:
        q, a = questions[int(ex.id)], annotations[int(ex.id)]
        assert ex.prefix == f"answer en {q['question']}"
        assert ex.targets == tuple(x["answer"] for x in a["answers"]) and len(ex.targets) == 10
        assert ex.reference == {"answers": list(ex.targets), "answer_type": a["answer_type"]}
        jpeg = Image.open(demo / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg")
        assert ex.image.shape == (jpeg.height, jpeg.width, 3) and ex.image.dtype == np.uint8
    # The test split has questions and images but no answers.
    assert all(ex.targets == () and ex.prefix.startswith("answer en ") for ex in task.examples(demo, "test"))


def test_ground_truth_scores_perfect(task, demo):
    refs = task.references(demo, "minival")
    # The most frequent human answer is the dataset's multiple_choice_answer; >= 4 matches score 1.
    preds = {i: collections.Counter(r["answers"]).most_common(1)[0][0] for i, r in refs.items()}
    scores = task.score(preds, refs)
    assert scores.metrics["accuracy"] == 1.0 and scores.num_examples == 4 and scores.num_unparsable == 0


def test_demo_is_deterministic_and_varies_with_the_seed(task, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        task.write_demo(tmp_path / name, num_train=9, num_eval=3, seed=seed)
    files = ["v2_mscoco_train2014_annotations.json", "train2014/COCO_train2014_000000000001.jpg"]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert all((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)
    questions = json.loads((tmp_path / "a" / "v2_OpenEnded_mscoco_train2014_questions.json").read_text())
    assert len(questions["questions"]) == 9 and questions["task_type"] == "Open-Ended"


def _write_split(root: Path, subtype: str, answers_per_question, image_modes, first_image_id):
    (root / subtype).mkdir()
    questions, annotations = [], []
    for i, answers in enumerate(answers_per_question):
        image_id = first_image_id + i
        mode = image_modes[i % len(image_modes)]
        Image.new(mode, (40 + i, 30), 128 if mode == "L" else (10, 20, 30, 40)[: len(mode)]).save(
            root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", format="JPEG")
        questions.append({"image_id": image_id, "question": f"question {i}?", "question_id": image_id * 1000})
        annotations.append({"question_id": image_id * 1000, "image_id": image_id, "question_type": "what",
                            "answer_type": "other", "multiple_choice_answer": answers[0],
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                        for j, a in enumerate(answers)]})
    (root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(json.dumps({"questions": questions}))
    (root / f"v2_mscoco_{subtype}_annotations.json").write_text(json.dumps({"annotations": annotations}))


def _write_tiny(root: Path, answers_per_question, image_modes=("RGB", "L")):
    """Hand-written official-format files: one val2014 question per answer list (and one train question)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_split(root, "train2014", [["yes"] * 10], ("RGB",), first_image_id=1)
    _write_split(root, "val2014", answers_per_question, image_modes, first_image_id=100)


def test_hand_written_files_and_a_damaged_prediction(task, tmp_path):
    _write_tiny(tmp_path, [["red"] * 10, ["2"] * 3 + ["3"] * 7, ["Cat"] * 10],
                image_modes=("RGB", "L", "CMYK"))
    examples = {ex.id: ex for ex in task.examples(tmp_path, "eval")}
    assert sorted(examples) == ["100000", "101000", "102000"]
    assert all(ex.image.ndim == 3 and ex.image.shape[2] == 3 for ex in examples.values())  # L and CMYK too
    assert examples["101000"].image.shape == (30, 41, 3)
    refs = task.references(tmp_path, "eval")
    perfect = task.score({"100000": "red", "101000": "3", "102000": "Cat"}, refs)
    assert perfect.metrics["accuracy"] == 1.0
    # "2" matches 3 of 10 answers -> 0.9; "cat" vs ten "Cat" is a raw (case-sensitive) compare -> 0.
    damaged = task.score({"100000": "red", "101000": "2", "102000": "cat"}, refs)
    assert damaged.metrics["accuracy"] == pytest.approx((1.0 + 0.9 + 0.0) / 3)
    assert damaged.extra["per_example"] == {"100000": 1.0, "101000": 0.9, "102000": 0.0}


def test_unparsable_and_missing_predictions_are_misses(task, tmp_path):
    _write_tiny(tmp_path, [["red"] * 10, ["blue"] * 10])
    refs = task.references(tmp_path, "eval")
    assert task.parse(None) is None and task.parse(" red\n") == " red\n"
    scores = task.score({"100000": task.parse(None)}, refs)  # 101000 has no prediction at all
    assert scores.metrics["accuracy"] == 0.0 and scores.num_unparsable == 1 and scores.num_examples == 2


def test_scoring_the_test_split_says_why_it_cannot(task, demo):
    refs = task.references(demo, "test")
    with pytest.raises(DataError, match="evaluation server"):
        task.score({}, refs)


def test_missing_manual_dir_shows_the_download_instructions(task, tmp_path):
    with pytest.raises(DataError, match="v2_OpenEnded_mscoco_train2014_questions.json"):
        task.examples(tmp_path / "nowhere", "train")


def test_missing_annotation_file_is_named(task, tmp_path):
    _write_tiny(tmp_path, [["red"] * 10])
    (tmp_path / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(DataError, match=r"v2_mscoco_val2014_annotations.json is missing(.|\n)*visualqa.org"):
        task.examples(tmp_path, "eval")


def test_malformed_json_names_file_and_line(task, tmp_path):
    _write_tiny(tmp_path, [["red"] * 10])
    bad = '{"annotations": [\n  {"question_id": 1,,}\n]}'
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text(bad)
    with pytest.raises(DataError, match=r"v2_mscoco_val2014_annotations.json:2:\d+: malformed JSON"):
        task.examples(tmp_path, "eval")


def test_bad_records_name_file_record_and_field(task, tmp_path):
    _write_tiny(tmp_path, [["red"] * 10])
    path = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    path.write_text(json.dumps({"questions": [{"image_id": 100, "question_id": 100000}]}))
    with pytest.raises(DataError, match=r"val2014_questions.json: questions\[0\]: missing field 'question'"):
        task.examples(tmp_path, "eval")
    path.write_text(json.dumps({"questions": [{"image_id": 7, "question": "q?", "question_id": 100000}]}))
    with pytest.raises(DataError, match=r"questions\[0\]: image .*_000000000007.jpg .* is missing"):
        task.examples(tmp_path / ".", "eval", data_dir=tmp_path / "_tfds2")


def test_roles_resolve_on_demo_and_real_sizes():
    # Demo: a 4-question validation split is all minival, and contributes nothing to train.
    assert resolve_split("train + validation[:-10240]", {"train": 6, "validation": 4}) == "train[0:6]"
    assert resolve_split("validation[-10240:]", {"train": 6, "validation": 4}) == "validation[0:4]"
    # Real VQAv2 (443,757 train / 214,354 val questions): exactly big_vision's slices.
    real = {"train": 443_757, "validation": 214_354}
    assert resolve_split("train + validation[:-10240]", real) == "train[0:443757]+validation[0:204114]"
    assert resolve_split("validation[-10240:]", real) == "validation[204114:214354]"
    # Percentages agree with TFDS wherever TFDS gives both sides an example, and never leave one empty.
    for n in range(2, 3000, 7):
        for spec in ("train[:-5%]", "train[-5%:]"):
            ours = resolve_split(spec, {"train": n})
            (absolute,) = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
                {"train": types.SimpleNamespace(num_examples=n)})
            lo, hi, _ = slice(absolute.from_, absolute.to).indices(n)
            if n >= 20:
                assert ours == f"train[{lo}:{hi}]", (n, spec)
            assert ours != "" and not ours.endswith(f"[{n}:{n}]")
    with pytest.raises(DataError, match="'test' .* was not prepared"):
        resolve_split("test", {"train": 6})


def test_recipe_follows_big_vision_sweep_best(task):
    r224, r448, r896 = (task.recipe("3b", res) for res in (224, 448, 896))
    assert (r224.epochs, r224.batch_size, r224.lr, r224.weight_decay) == (10, 256, 1e-5, 1e-6)
    assert r448.weight_decay == 0.0 and r896 == r448
    assert (r224.text_len, r224.decode, r224.max_decode_len) == (32, "greedy", 32)
    # The nano family uses the recipe of the size/resolution it stands for.
    assert task.recipe("nano-s", 32) == r224 and task.recipe("nano-m", 64) == r448
    assert paper_point("nano-l", 128) == ("28b", 896)
    with pytest.raises(KeyError, match="unknown model size '4b'"):
        task.recipe("4b", 224)
