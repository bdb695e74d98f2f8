"""The ICDAR'15 plugin: raw files -> TFDS (no tensorflow) -> Examples -> parse -> HierText scores."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from tasks import registry
from tasks.base import DataError
from tasks.demo import icdar15 as demo
from tasks.icdar15 import PREFIX, Icdar15, format_target, parse_words, read_gt

# A 200 x 100 image: two legible words (one with a comma, one quoted with an escaped quote) and a ###.
GT_LINES = ['10,20,60,20,60,40,10,40,"say \\"hi\\""',
            "100,50,180,55,178,75,98,70,1,200",
            "150,5,170,5,170,12,150,12,###"]
GT_BYTES = ("\ufeff" + "\r\n".join(GT_LINES) + "\r\n").encode("utf-8")
# round(v * 1023) of y/100 and x/200, corner by corner as <locY><locX>.
TARGET = ("<loc0205><loc0051><loc0205><loc0307><loc0409><loc0307><loc0409><loc0051> say \"hi\"; "
          "<loc0512><loc0512><loc0563><loc0921><loc0767><loc0910><loc0716><loc0501> 1,200")


def _jpeg(width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _write_raw(root, zipped=False):
    """One hand-written train image (img_7) and one test image (img_3), official names."""
    files = {"ch4_training_images": {"img_7.jpg": _jpeg(200, 100)},
             "ch4_training_localization_transcription_gt": {"gt_img_7.txt": GT_BYTES},
             "ch4_test_images": {"img_3.jpg": _jpeg(200, 100, 1)},
             "Challenge4_Test_Task1_GT": {"gt_img_3.txt": GT_BYTES}}
    root.mkdir(parents=True)
    for folder, members in files.items():
        if zipped:
            with zipfile.ZipFile(root / f"{folder}.zip", "w") as z:
                for name, data in members.items():
                    z.writestr(name, data)
        else:
            (root / folder).mkdir(parents=True)
            for name, data in members.items():
                (root / folder / name).write_bytes(data)


def test_registry_finds_the_plugin():
    assert isinstance(registry.get_task("icdar15"), Icdar15)


def test_read_gt_handles_bom_crlf_commas_and_quotes():
    words = read_gt(GT_BYTES, "gt_img_7.txt")
    assert words == [([10, 20, 60, 20, 60, 40, 10, 40], 'say "hi"'),
                     ([100, 50, 180, 55, 178, 75, 98, 70], "1,200"),
                     ([150, 5, 170, 5, 170, 12, 150, 12], "###")]
    assert read_gt(b"1,2,3,4,5,6,7,8,a, b ,c\n\n", "f") == [([1, 2, 3, 4, 5, 6, 7, 8], "a, b ,c")]


def test_malformed_gt_line_names_file_and_line():
    with pytest.raises(DataError, match=r"gt_img_9\.txt:2: expected x1,y1"):
        read_gt(b"\xef\xbb\xbf1,2,3,4,5,6,7,8,ok\r\n1,2,3,4,5,6,7,x,bad\r\n", "gt_img_9.txt")
    with pytest.raises(DataError, match=r"gt_img_9\.txt:1:"):
        read_gt(b"1,2,3,4,5,6,7,8\r\n", "gt_img_9.txt")  # no transcription field


@pytest.mark.parametrize("zipped", [False, True])
def test_hand_written_raw_files_build_format_and_score(tmp_path, zipped):
    task = Icdar15()
    _write_raw(tmp_path / "raw", zipped=zipped)
    train = list(task.examples(tmp_path / "raw", "train", tmp_path / "tfds"))
    test = list(task.examples(tmp_path / "raw", "test", tmp_path / "tfds"))
    assert [e.id for e in train] + [e.id for e in test] == ["img_7", "img_3"]
    ex = test[0]
    assert ex.image.shape == (100, 200, 3)
    assert ex.prefix == PREFIX == "ocr with boxes"
    assert ex.targets == (TARGET,)
    assert ex.reference["width"] == 200 and ex.reference["height"] == 100
    assert [w["text"] for w in ex.reference["words"]] == ['say "hi"', "1,200", "###"]

    refs = {ex.id: ex.reference}
    perfect = task.score({ex.id: task.parse(TARGET)}, refs)
    assert perfect.metrics["e2e_f1"] == perfect.metrics["det_f1"] == perfect.metrics["rrc_det_f1"] == 1.0
    assert perfect.num_unparsable == 0

    # Damaged: first word's text in upper case (det TP, not e2e TP), second word dropped.
    damaged = TARGET.split("; ")[0].replace('say "hi"', 'SAY "HI"')
    scores = task.score({ex.id: task.parse(damaged)}, refs)
    assert scores.metrics["det_precision"] == 1.0 and scores.metrics["det_recall"] == 0.5
    assert scores.metrics["det_f1"] == pytest.approx(2 / 3)
    assert scores.metrics["e2e_precision"] == 0.0 and scores.metrics["e2e_f1"] == 0.0
    assert scores.extra["counts"]["tp_det"] == 1


def test_demo_data_builds_splits_and_scores_ground_truth_perfectly(tmp_path):
    task = Icdar15()
    task.write_demo(tmp_path / "raw", num_train=6, num_eval=4, seed=0)
    sizes = {role: len(task.examples(tmp_path / "raw", role, tmp_path / "tfds")) for role in task.splits}
    assert sizes["train"] + sizes["minival"] == 6 and sizes["minival"] >= 1 and sizes["train"] >= 1
    assert sizes["eval"] == sizes["test"] == 4
    examples = list(task.examples(tmp_path / "raw", "eval", tmp_path / "tfds"))
    refs = {e.id: e.reference for e in examples}
    assert sorted(refs) == ["img_1", "img_2", "img_3", "img_4"]
    assert all(e.targets[0].startswith("<loc") for e in examples)
    scores = task.score({e.id: task.parse(e.targets[0]) for e in examples}, refs)
    assert scores.metrics["e2e_f1"] == 1.0 and scores.metrics["det_f1"] == 1.0
    assert scores.num_examples == 4
    # A missing prediction counts as an empty one: recall falls, precision stays.
    first = examples[0].id
    partial = task.score({e.id: task.parse(e.targets[0]) for e in examples if e.id != first}, refs)
    missing = sum(w["text"] != "###" for w in refs[first]["words"])
    total = sum(w["text"] != "###" for r in refs.values() for w in r["words"])
    assert partial.metrics["e2e_recall"] == pytest.approx((total - missing) / total)
    assert partial.metrics["e2e_precision"] == 1.0
    # The OCR view: the same scenes, their legible words (no `###`, no loc tokens) as the target.
    ocr = task.ocr_examples(tmp_path / "raw", "eval")
    assert len(ocr) == 4 and all(o.prefix == "ocr" for o in ocr)
    for o, e in zip(ocr, examples):
        assert sorted(o.targets[0].split()) == sorted(w["text"] for w in e.reference["words"]
                                                      if w["text"] != "###")


def test_demo_is_deterministic_official_and_varied(tmp_path):
    demo.write_demo(tmp_path / "a", num_train=3, num_eval=2, seed=5)
    demo.write_demo(tmp_path / "b", num_train=3, num_eval=2, seed=5)
    demo.write_demo(tmp_path / "c", num_train=3, num_eval=2, seed=6)
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(n) for n in names] == [
        "Challenge4_Test_Task4_GT/gt_img_1.txt", "Challenge4_Test_Task4_GT/gt_img_2.txt",
        "ch4_test_images/img_1.jpg", "ch4_test_images/img_2.jpg",
        "ch4_training_images/img_1.jpg", "ch4_training_images/img_2.jpg", "ch4_training_images/img_3.jpg",
        "ch4_training_localization_transcription_gt/gt_img_1.txt",
        "ch4_training_localization_transcription_gt/gt_img_2.txt",
        "ch4_training_localization_transcription_gt/gt_img_3.txt"]
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    gt = "ch4_training_localization_transcription_gt/gt_img_1.txt"
    assert (tmp_path / "a" / gt).read_bytes() != (tmp_path / "c" / gt).read_bytes()
    assert (tmp_path / "a" / gt).read_bytes().startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in (tmp_path / "a" / gt).read_bytes()


def test_demo_words_are_clockwise_inside_the_image_and_sized_for_64_px():
    heights, texts = [], []
    for n in range(40):
        image, words = demo.render(np.random.default_rng([0, 0, n]))
        assert image.size == (demo.WIDTH, demo.HEIGHT)
        for quad, text in read_gt(demo.gt_lines(words), "demo"):
            pts = np.array(quad, float).reshape(4, 2)
            # RRC's clockwise test (rrc_evaluation_funcs validate_clockwise_points): sum <= 0.
            assert sum((pts[(i + 1) % 4, 0] - pts[i, 0]) * (pts[(i + 1) % 4, 1] + pts[i, 1])
                       for i in range(4)) <= 0
            assert pts.min() >= 0 and pts[:, 0].max() < demo.WIDTH and pts[:, 1].max() < demo.HEIGHT
            heights.append(np.linalg.norm(pts[3] - pts[0]))
            texts.append(text)
    assert "###" in texts and len(set(texts)) > 40
    # Legible words: 1-3 per scene, their quads (ink box + margin) ~6-10 px tall at 64 px input, ~3-5 px
    # at 32 px; x-heights about half that (docs/demo-findings.md §3).
    legible = np.array([h for h, t in zip(heights, texts) if t != "###"])
    assert 40 <= len(legible) <= 120
    assert np.median(legible) / demo.HEIGHT * 64 > 6 and np.median(legible) / demo.HEIGHT * 32 < 5


def test_parse_is_tolerant_and_counts_malformed_groups():
    assert parse_words("") == {"words": [], "malformed": 0}
    assert parse_words("no boxes at all")["malformed"] == 1
    bad = parse_words("<loc0001><loc0002> abc")  # 2 loc tokens, not 8
    assert bad == {"words": [], "malformed": 1}
    eight = "<loc0000><loc0000><loc0000><loc1023><loc1023><loc1023><loc1023><loc0000>"
    out = parse_words(f"{eight} A;; <loc12><loc0001> junk; {eight} a; b")
    assert out["malformed"] == 1
    assert [w["text"] for w in out["words"]] == ["A;", "a; b"]
    assert out["words"][0]["quad"] == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert parse_words(f"{eight}{eight} X")["words"][0]["text"] == ""  # box without text: still a word


def test_unparsable_output_is_a_miss_not_a_crash():
    task = Icdar15()
    ref = {"width": 200, "height": 100,
           "words": [{"quad": [10, 20, 60, 20, 60, 40, 10, 40], "text": "ok"}]}
    preds = {"a": task.parse("<loc0001><loc9999> ??"), "b": task.parse("garbage")}
    scores = task.score(preds, {"a": ref, "b": ref})
    assert scores.num_unparsable == 2
    assert scores.metrics["e2e_recall"] == 0.0 and scores.metrics["det_precision"] == 1.0
    assert scores.extra["malformed_groups"] == 2


def test_target_skips_dont_care_and_reads_top_to_bottom_left_to_right():
    quads = np.array([[300, 80, 340, 80, 340, 90, 300, 90],  # lower row
                      [200, 10, 240, 10, 240, 20, 200, 20],  # top row, right
                      [0, 12, 40, 12, 40, 22, 0, 22],  # top row, left
                      [100, 50, 110, 50, 110, 55, 100, 55]], float)
    target = format_target(quads, ["low", "right", "left", "###"], 400, 100)
    assert [w.split("> ")[1] for w in target.split("; ")] == ["left", "right", "low"]
    assert format_target(quads[3:], ["###"], 400, 100) == ""


def test_missing_manual_dir_or_folder_shows_download_instructions(tmp_path):
    task = Icdar15()
    with pytest.raises(DataError, match="rrc.cvc.uab.es"):
        task.prepare(tmp_path / "nowhere", tmp_path / "tfds")
    _write_raw(tmp_path / "raw")
    for p in (tmp_path / "raw" / "Challenge4_Test_Task1_GT").iterdir():
        p.unlink()
    (tmp_path / "raw" / "Challenge4_Test_Task1_GT").rmdir()
    with pytest.raises(DataError, match="(?s)Challenge4_Test_Task4_GT.*rrc.cvc.uab.es"):
        task.prepare(tmp_path / "raw", tmp_path / "tfds")


def test_image_without_ground_truth_is_named(tmp_path):
    _write_raw(tmp_path / "raw")
    (tmp_path / "raw" / "ch4_test_images" / "img_4.jpg").write_bytes(_jpeg(20, 10))
    with pytest.raises(DataError, match=r"img_4\.jpg: no ground truth gt_img_4\.txt"):
        Icdar15().prepare(tmp_path / "raw", tmp_path / "tfds")


def test_recipe_follows_the_paper_for_every_size_and_resolution():
    task = Icdar15()
    for size, res in [("3b", 896), ("28b", 224), ("nano-s", 32), ("nano-l", 128)]:
        r = task.recipe(size, res)
        assert (r.steps, r.batch_size, r.lr, r.label_smoothing, r.text_len) == (15000, 256, 1e-5, 0.1, 2048)
        assert r.lr_grid == (1e-6, 5e-6, 1e-5, 5e-5, 1e-4)
    with pytest.raises(KeyError, match="unknown model size '2b'"):
        task.recipe("2b", 224)
    with pytest.raises(KeyError, match="resolution 512 is not in the paligemma2 family"):
        task.recipe("3b", 512)
