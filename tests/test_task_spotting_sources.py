"""Total-Text, HierText and TextOCR read from their official raw formats (demo data written in them), the
text-spotting mixture, and its sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.base import DataError
from tasks.mixture import MixtureExamples, MixtureSource, draw
from tasks.registry import get_task
from tasks.spotting import corner_quad, read_totaltext_gt


@pytest.mark.parametrize("name", ["totaltext", "hiertext", "textocr"])
def test_demo_builds_and_ground_truth_scores_perfect(name, tmp_path):
    task = get_task(name)
    task.write_demo(tmp_path / "raw", num_train=4, num_eval=3, seed=0)
    train = task.examples(tmp_path / "raw", "train", tmp_path / "prep")
    evals = task.examples(tmp_path / "raw", "eval", tmp_path / "prep")
    assert len(train) >= 3 and len(evals) == 3
    for ex in evals:
        assert ex.prefix == "ocr with boxes" and ex.image.ndim == 3
        legible = [w for w in ex.reference["words"] if w["text"] != "###"]
        assert ex.targets[0].count("<loc") == 8 * len(legible)
    refs = {ex.id: ex.reference for ex in evals}
    scores = task.score({ex.id: task.parse(ex.targets[0]) for ex in evals}, refs)
    assert scores.metrics["e2e_f1"] > 0.95  # quads from polygons, loc-binned: IoU well over 0.5


def test_totaltext_polygons_keep_their_vertices_and_dont_care():
    content = ("x: [[10 50 90 90 50 10]], y: [[10 5 10 40 45 40]], ornt: [u'c'], transcriptions: [u'Bend']\n"
               "x: [[1 9 9\n 1]], y: [[1 1 9 9]], ornt: [u'#'], transcriptions: [u'#']\n")
    words = read_totaltext_gt(content, "poly_gt_img1.txt")
    assert words[0] == ([10, 10, 50, 5, 90, 10, 90, 40, 50, 45, 10, 40], "Bend")
    assert words[1][1] == "###" and len(words[1][0]) == 8
    with pytest.raises(DataError, match=r"poly_gt_img1.txt:1: 2 x and 3 y"):
        read_totaltext_gt("x: [[1 2]], y: [[1 2 3]], ornt: [u'm'], transcriptions: [u'a']", "poly_gt_img1.txt")


def test_corner_quad_of_a_polygon_is_its_rotated_rectangle_clockwise_from_top_left():
    quad = corner_quad([10, 10, 50, 10, 90, 10, 90, 40, 50, 40, 10, 40]).reshape(4, 2)
    np.testing.assert_allclose(quad, [[10, 10], [90, 10], [90, 40], [10, 40]])
    same = [3, 4, 20, 4, 20, 9, 3, 9]
    np.testing.assert_array_equal(corner_quad(same), same)


def test_icdar15_trains_on_the_mixture_of_the_sources_present(tmp_path, capsys):
    icdar = get_task("icdar15")
    (tmp_path / "icdar15").mkdir()
    alone = icdar.train_mixture(tmp_path / "icdar15")
    assert [s.task for s in alone] == ["icdar15"]
    assert "training on icdar15 alone" in capsys.readouterr().err
    get_task("totaltext").write_demo(tmp_path / "totaltext", num_train=3, num_eval=1, seed=0)
    (tmp_path / "hiertext").mkdir()  # an empty folder is no source
    mixed = icdar.train_mixture(tmp_path / "icdar15")
    assert [(s.task, s.manual_dir) for s in mixed] == [("icdar15", tmp_path / "icdar15"),
                                                       ("totaltext", tmp_path / "totaltext")]
    get_task("icdar15").write_demo(tmp_path / "icdar15", num_train=3, num_eval=1, seed=0)
    assert [s.task for s in get_task("totaltext").train_mixture(tmp_path / "totaltext")] == ["totaltext", "icdar15"]


def test_mixture_examples_draw_from_every_source(tmp_path):
    for name in ("icdar15", "textocr"):
        get_task(name).write_demo(tmp_path / name, num_train=4, num_eval=1, seed=0)
    sources = [MixtureSource("icdar15", tmp_path / "icdar15"), MixtureSource("textocr", tmp_path / "textocr")]
    mix = MixtureExamples.of(sources, seed=3)
    ids = {mix[i].id for i in range(60)}
    assert any(i.startswith("img_") for i in ids) and any(i.startswith("train") for i in ids)
    assert mix[17].id == MixtureExamples.of(sources, seed=3)[17].id


def test_two_source_sampler_follows_its_weights():
    weights, sizes, n = (0.3, 0.7), (5, 1000), 10_000
    draws = [draw(i, seed=11, weights=weights, sizes=sizes) for i in range(n)]
    first = sum(s == 0 for s, _ in draws)
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(first - n * 0.3) < 3 * sigma
    assert all(0 <= k < sizes[s] for s, k in draws)
    assert {k for s, k in draws if s == 0} == set(range(5))
    assert draws[123] == draw(123, seed=11, weights=weights, sizes=sizes)  # a pure function of (seed, index)
    assert draws != [draw(i, seed=12, weights=weights, sizes=sizes) for i in range(n)]
    with pytest.raises(ValueError, match="weights"):
        draw(0, seed=0, weights=(0, 0), sizes=(1, 1))
