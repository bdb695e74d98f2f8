"""Prepared data (tasks/records.py, tasks/prepared.py): each image stored once, one cache keyed by the raw
files' content, references read without images, random access, TFDS's example order, and no TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import images
from tasks.records import IMAGES, read_meta
from tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


@pytest.fixture
def vqav2_raw(tmp_path):
    raw = tmp_path / "raw"
    get_task("vqav2").write_demo(raw, num_train=6, num_eval=7, seed=0)  # 3 questions per image
    return raw


def _split_folders(cache: Path, task: str) -> list[Path]:
    return sorted(p for p in (cache / task).glob("*/v*-*") if p.is_dir())


def test_an_image_is_stored_once_whatever_its_number_of_questions(cache, vqav2_raw):
    task = get_task("vqav2")
    data = task.prepare(vqav2_raw, splits={"validation"})
    folder = data.splits["validation"].folder
    meta = read_meta(folder)
    jpegs = sorted((vqav2_raw / "val2014").glob("*.jpg"))
    assert (meta["num_examples"], meta["num_images"]) == (7, len(jpegs)) == (7, 3)
    raw_bytes = sum(p.stat().st_size for p in jpegs)
    assert meta["bytes"]["images"] == raw_bytes  # the JPEGs as shipped, once each
    assert (folder / IMAGES).stat().st_size < raw_bytes * 1.05 + (256 << 10)  # array_record: ~128 KiB a file
    # Questions of one image decode to the same pixels, those of the raw file.
    by_image: dict[int, list[np.ndarray]] = {}
    for ex in task.examples(vqav2_raw, "eval"):
        by_image.setdefault(int(ex.id) // 1000, []).append(ex.image)
    for image_id, pixels in by_image.items():
        raw = np.asarray(Image.open(vqav2_raw / "val2014" / f"COCO_val2014_{image_id:012d}.jpg").convert("RGB"))
        assert all(np.array_equal(p, raw) for p in pixels)
    assert sorted(len(v) for v in by_image.values()) == [1, 3, 3]


def test_preparing_twice_prepares_nothing(cache, vqav2_raw, capsys):
    task = get_task("vqav2")
    task.references(vqav2_raw, "eval")
    assert "preparing split 'validation'" in capsys.readouterr().err
    before = {p: p.stat().st_mtime_ns for p in _split_folders(cache, "vqav2")}
    assert task.references(vqav2_raw, "eval") and capsys.readouterr().err == ""
    assert {p: p.stat().st_mtime_ns for p in _split_folders(cache, "vqav2")} == before


def test_a_moved_or_copied_raw_folder_prepares_nothing(cache, vqav2_raw, tmp_path, capsys):
    task = get_task("vqav2")
    refs = task.references(vqav2_raw, "eval")
    capsys.readouterr()
    before = _split_folders(cache, "vqav2")
    moved = tmp_path / "elsewhere" / "vqa"
    moved.parent.mkdir()
    shutil.move(vqav2_raw, moved)
    assert task.references(moved, "eval") == refs
    copied = tmp_path / "copy"  # fresh modification times: the key is the content, not the stat
    shutil.copytree(moved, copied, copy_function=shutil.copyfile)
    assert task.references(copied, "eval") == refs
    assert capsys.readouterr().err == "" and _split_folders(cache, "vqav2") == before


def test_score_and_run_share_the_cache(cache, vqav2_raw, capsys):
    """`score` reads eval, `run` reads train and eval: the eval split is prepared once for both."""
    task = get_task("vqav2")
    task.references(vqav2_raw, "eval")
    task.examples(vqav2_raw, "train")
    err = capsys.readouterr().err
    assert err.count("preparing split 'validation'") == 1 and err.count("preparing split 'train'") == 1


@pytest.mark.parametrize("name", ["vqav2", "docvqa"])
def test_references_are_read_without_decoding_an_image(cache, tmp_path, monkeypatch, name):
    task = get_task(name)
    task.write_demo(tmp_path / name, num_train=4, num_eval=5, seed=1)
    task.prepare(tmp_path / name, splits=None)

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(images, "decode_image", refuse)
    refs = task.references(tmp_path / name, "eval")
    assert len(refs) == 5 and all(r["answers"] for r in refs.values())
    with pytest.raises(AssertionError, match="an image was decoded"):
        task.examples(tmp_path / name, "eval")[0].image  # noqa: B018 - reading it is the point


def test_examples_are_random_access(cache, tmp_path):
    task = get_task("docvqa")
    task.write_demo(tmp_path / "raw", num_train=5, num_eval=4, seed=2)
    examples = task.examples(tmp_path / "raw", "eval")
    assert len(examples) == 4 and examples[-1].id == examples[3].id
    raw = {str(r["questionId"]): r for r in json.loads((tmp_path / "raw" / "val_v1.0_withQT.json").read_text())["data"]}
    ex = examples[2]
    page = np.asarray(Image.open(tmp_path / "raw" / raw[ex.id]["image"]).convert("RGB"))
    assert np.array_equal(ex.image, page) and ex.prefix == raw[ex.id]["question"]
    with pytest.raises(IndexError):
        examples[4]  # noqa: B018


def test_positions_follow_tfds_order(cache, tmp_path):
    """The same examples in the same order as TFDS's own writer gives them (md5 of the key salted with the
    split name), so slices such as "train[-5%:]" keep selecting what they selected on TFDS-prepared data."""
    import tensorflow_datasets as tfds

    task = get_task("docvqa")
    task.write_demo(tmp_path / "raw", num_train=23, num_eval=3, seed=3)
    builder = task.builder(tmp_path / "raw", tmp_path / "tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "raw")))
    theirs = [int(r["question_id"]) for r in builder.as_data_source(split="train")]
    ours = task.prepare(tmp_path / "raw", splits={"train"}).splits["train"]
    assert [ours.record(i)["question_id"] for i in range(len(ours))] == theirs
    assert theirs != sorted(theirs)


def test_a_changed_annotation_prepares_again_and_drops_the_old_entry(cache, vqav2_raw, capsys):
    task = get_task("vqav2")
    task.references(vqav2_raw, "eval")
    (old,) = [p.parent for p in _split_folders(cache, "vqav2")]
    path = vqav2_raw / "v2_mscoco_val2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["answers"][0]["answer"] = "zzz"  # a same-length file would do as well
    path.write_text(json.dumps(data))
    refs = task.references(vqav2_raw, "eval")
    assert "zzz" in {a for r in refs.values() for a in r["answers"]}
    assert "changed v2_mscoco_val2014_annotations.json" in capsys.readouterr().err
    assert not old.exists()


# TFDS's writer would spill every split to disk through tf.io.gfile with a zero memory buffer: preparing
# must not go through it, and must leave TensorFlow unimported (installed or not).
_NO_TENSORFLOW = textwrap.dedent("""
    import sys
    from tensorflow_datasets.core import shuffle
    shuffle.MAX_MEM_BUFFER_SIZE = 0
    from tasks.registry import get_task
    task = get_task(sys.argv[1])
    task.write_demo(sys.argv[2], num_train=6, num_eval=4, seed=0)
    sizes = task.prepare(sys.argv[2], splits=None).sizes
    refs = task.references(sys.argv[2], "eval")
    assert "tensorflow" not in sys.modules
    print(sizes, len(refs))
""")


@pytest.mark.parametrize("name", ["vqav2", "docvqa"])
def test_preparing_imports_no_tensorflow(tmp_path, name):
    env = dict(os.environ, PALIGEMMA_TRANSFER_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, name, str(tmp_path / "raw")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("} 4")  # prepared, and 4 references read


@pytest.mark.slow
def test_a_split_over_a_gigabyte_is_prepared_without_tensorflow(tmp_path, cache):
    """~1.2 GB of incompressible JPEGs in one split: past TFDS's 1 GiB buffer, where its writer needed
    tf.io.gfile. Prepared in a few tens of seconds; the images are stored once, nothing else is big."""
    raw = tmp_path / "raw"
    (raw / "val2014").mkdir(parents=True)
    big = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(big).save(raw / "val2014" / "COCO_val2014_000000000001.jpg", quality=95)  # ~3.5 MB
    data = (raw / "val2014" / "COCO_val2014_000000000001.jpg").read_bytes()
    n_images = (1_200_000_000 // len(data)) + 1
    questions = [{"image_id": i, "question": f"q{i}?", "question_id": i * 1000} for i in range(1, n_images + 1)]
    answers = [{"question_id": q["question_id"], "answer_type": "other", "question_type": "what",
                "answers": [{"answer": "x"}] * 10} for q in questions]
    for i in range(2, n_images + 1):
        (raw / "val2014" / f"COCO_val2014_{i:012d}.jpg").write_bytes(data)
    (raw / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    (raw / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": answers}))
    task = get_task("vqav2")
    split = task.prepare(raw, splits={"validation"}).splits["validation"]
    assert "tensorflow" not in sys.modules
    assert len(split) == n_images and split.meta["bytes"]["images"] > 1 << 30
    assert _bytes(split.folder) < 1.01 * _bytes(raw)
    assert task.examples(raw, "eval")[-1].image.shape == (1500, 2000, 3)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
