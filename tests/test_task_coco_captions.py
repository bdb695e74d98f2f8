"""COCO captions plugin: official raw files -> TFDS (no tensorflow) -> Examples -> scores."""

import json

import pytest
from PIL import Image

from tasks.base import DataError
from tasks.coco_captions import CocoCaptions
from tasks.registry import get_task

TASK = CocoCaptions()


def write_raw(root, train, val, karpathy=None):
    """Hand-written COCO 2014 files: {image_id: [captions]} per folder, plus Karpathy's split file
    ({image_id: split}) when given."""
    (root / "annotations").mkdir(parents=True)
    sentence = 0
    for folder, images in (("train2014", train), ("val2014", val)):
        (root / folder).mkdir()
        content = {"info": {}, "licenses": [], "images": [], "annotations": []}
        for image_id, captions in images.items():
            name = f"COCO_{folder}_{image_id:012d}.jpg"
            Image.new("RGB", (64, 48), (image_id % 255, 90, 30)).save(root / folder / name)
            content["images"].append({"id": image_id, "file_name": name, "height": 48, "width": 64})
            for caption in captions:
                sentence += 1
                content["annotations"].append({"image_id": image_id, "id": sentence,
                                               "caption": caption})
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(content, indent=1))
    if karpathy is not None:
        entries = [{"cocoid": i, "split": s, "filepath": "train2014" if i in train else "val2014",
                    "filename": f"COCO_x_{i:012d}.jpg", "sentences": []} for i, s in karpathy.items()]
        (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))


TRAIN = {11: ["a red circle", "a circle that is red"], 12: ["a blue square", "one blue square"],
         13: ["a green triangle", "a triangle"]}
VAL = {21: ["a red circle above a blue square", "two shapes on a white background"],
       22: ["a yellow star on the left", "a star"], 23: ["a black dot", "a tiny dot"]}


def test_demo_round_trip_through_karpathy_splits(tmp_path):
    TASK.write_demo(tmp_path, num_train=6, num_eval=4, seed=3)
    sizes = {role: len(TASK.examples(tmp_path, role)) for role in ("train", "minival", "eval", "test")}
    # 6 training images: 5 Karpathy train (1 held out as minival) + 1 restval; 4 val, 4 test.
    assert sizes == {"train": 5, "minival": 1, "eval": 4, "test": 4}
    ex = TASK.examples(tmp_path, "eval")[0]
    ann = json.loads((tmp_path / "annotations" / "captions_val2014.json").read_text())
    expected = [a["caption"] for a in ann["annotations"] if a["image_id"] == int(ex.id)]
    assert ex.prefix == "caption en"
    assert list(ex.targets) == ex.reference == expected and len(expected) == 5
    assert ex.image.shape == (240, 320, 3) and ex.image.dtype.name == "uint8"


def test_demo_is_deterministic_and_varies_with_the_seed(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        TASK.write_demo(tmp_path / name, num_train=8, num_eval=2, seed=seed)
    read = lambda name: (tmp_path / name / "dataset_coco.json").read_bytes()  # noqa: E731
    assert read("a") == read("b") != read("c")
    captions = [s["raw"] for i in json.loads(read("a"))["images"] for s in i["sentences"]]
    assert len(set(captions)) > len(captions) // 2  # varied wording, not one fixed list


def test_official_splits_without_karpathy_file_and_scores(tmp_path):
    write_raw(tmp_path, TRAIN, VAL)
    assert [e.id for e in TASK.examples(tmp_path, "minival")] == ["13"]  # the last 2%, >= 1 image
    assert sorted(e.id for e in TASK.examples(tmp_path, "train")) == ["11", "12"]
    refs = TASK.references(tmp_path, "eval")
    assert refs == {str(k): v for k, v in VAL.items()}
    with pytest.raises(Exception, match="test"):
        TASK.examples(tmp_path, "test")  # no Karpathy file, no test split

    preds = {"21": TASK.parse(" a red circle above a blue square\n"),  # ground truth
             "22": TASK.parse("a yellow star"),  # damaged
             "23": TASK.parse(None)}  # not text: a miss, never a crash
    scores = TASK.score(preds, refs)
    assert scores.num_unparsable == 1 and scores.num_examples == 3
    per = scores.extra["per_example"]
    assert per["21"]["bleu4"] == pytest.approx(1.0) and per["21"]["rouge_l"] == 1.0
    # "a yellow star" vs "a yellow star on the left": LCS 3, P 1, R 3/6; vs "a star": P 2/3, R 1.
    # ROUGE-L takes the best P and the best R separately: P 1, R 1, F 1.
    assert per["22"]["rouge_l"] == 1.0
    # Sentence BLEU-4: 1-3-gram precisions 1; no 4-gram, which pycocoevalcap smooths to
    # 1e-15 / 1e-9; the closest reference length is 2 < 3, so no brevity penalty.
    assert per["22"]["bleu4"] == pytest.approx((1e-15 / 1e-9) ** 0.25)
    assert per["23"] == {"cider": 0.0, "bleu4": 0.0, "meteor": 0.0, "rouge_l": 0.0}
    assert scores.metrics["rouge_l"] == pytest.approx(2 / 3)
    assert set(scores.metrics) >= {"cider", "bleu4", "meteor", "rouge_l"}
    assert 0 < scores.metrics["meteor"] < 1


def test_damaged_caption_hand_computed(tmp_path):
    write_raw(tmp_path, TRAIN, VAL)
    refs = {"21": TASK.references(tmp_path, "eval")["21"]}
    scores = TASK.score({"21": "a red circle above a square"}, refs)
    # Best P and R over the two references come from "a red circle above a blue square":
    # LCS 6 -> P 6/6, R 6/7; ROUGE-L with beta 1.2.
    p, r = 1.0, 6 / 7
    assert scores.metrics["rouge_l"] == pytest.approx(2.44 * p * r / (r + 1.44 * p))
    # BLEU-4: precisions 6/6, 4/5, 3/4, 2/3; the closest reference length is 6 ("two shapes on a
    # white background"), so no brevity penalty.
    assert scores.metrics["bleu4"] == pytest.approx((0.8 * 0.75 * 2 / 3) ** 0.25)


def test_karpathy_restval_trains_and_test_is_separate(tmp_path):
    write_raw(tmp_path, TRAIN, VAL, karpathy={11: "train", 12: "train", 13: "train", 21: "restval",
                                              22: "val", 23: "test"})
    ids = {role: sorted(e.id for e in TASK.examples(tmp_path, role))
           for role in ("train", "minival", "eval", "test")}
    assert ids == {"train": ["11", "12", "21"], "minival": ["13"], "eval": ["22"], "test": ["23"]}


def test_missing_manual_dir_shows_download_instructions(tmp_path):
    with pytest.raises(DataError, match="captions_train2014.json"):
        TASK.examples(tmp_path / "nowhere", "train")


def test_malformed_json_names_file_and_line(tmp_path):
    write_raw(tmp_path, TRAIN, VAL)
    path = tmp_path / "annotations" / "captions_val2014.json"
    lines = path.read_text().splitlines()
    lines[5] = lines[5] + ","  # a trailing comma: invalid JSON on line 6/7
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"captions_val2014.json:\d+:\d+: malformed JSON"):
        TASK.prepare(tmp_path)


def test_bad_records_are_named(tmp_path):
    write_raw(tmp_path, TRAIN, VAL, karpathy={11: "train", 99: "val"})
    with pytest.raises(DataError, match=r"dataset_coco.json: images\[1\] has cocoid 99"):
        TASK.prepare(tmp_path)
    (tmp_path / "dataset_coco.json").unlink()
    (tmp_path / "val2014" / "COCO_val2014_000000000022.jpg").unlink()
    with pytest.raises(DataError, match="COCO_val2014_000000000022.jpg: image 22"):
        TASK.prepare(tmp_path)


def test_recipe_follows_big_vision_and_table_14():
    r = get_task("coco_captions").recipe("3b", 224)
    assert (r.epochs, r.batch_size, r.lr, r.weight_decay) == (5, 256, 3e-6, 1e-6)
    assert (r.decode, r.beam_size, r.max_decode_len, r.text_len) == ("beam", 2, 32, 32)
    assert TASK.recipe("nano-m", 64) == TASK.recipe("10b", 448)
    assert TASK.recipe("28b", 896).lr == 6e-7
    with pytest.raises(KeyError):
        TASK.recipe("nano-s", 224)
