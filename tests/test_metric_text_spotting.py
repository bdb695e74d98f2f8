"""metrics/text_spotting.py against hand-computed cases of the HierText and RRC rules.

The HierText evaluator is not on PyPI and may not be vendored, so parity is shown rule by rule on cases
computed by hand (docs/metric-facts.md §7.1, §7.2), including its 1e-5 quirks, plus an independent raster
check of the polygon IoU.
"""

import math

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from metrics import text_spotting as ts


def box(x0, y0, x1, y1):
    """Axis-aligned rectangle, clockwise in image coordinates from the top-left."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_square_rotated_45_degrees_against_its_axis_aligned_twin():
    # Square [-10, 10]^2 vs the diamond |x| + |y| <= 10*sqrt(2) of the same area 400: the diamond cuts
    # 4 corner triangles with legs 20 - 10*sqrt(2), so intersection = 400 - 2*(20 - 10*sqrt(2))^2.
    r = 10 * math.sqrt(2)
    diamond = [(0, -r), (r, 0), (0, r), (-r, 0)]
    inter = 400 - 2 * (20 - r) ** 2
    expected = inter / (800 - inter + ts.EPSILON)
    assert ts.iou([box(-10, -10, 10, 10)], [diamond])[0, 0] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    counts = ts.hiertext_image([(diamond, "A")], [(box(-10, -10, 10, 10), "A")])
    assert (counts.tp_det, counts.tp_e2e) == (1, 1)


def test_rotated_quad_iou_matches_a_raster_count():
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:400, 0:400] + 0.5
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1)

    def quad(cx, cy, w, h, degrees):
        a = math.radians(degrees)
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        return (corners @ rot.T + [cx, cy]).tolist()

    for _ in range(3):
        a = quad(200, 200, rng.uniform(80, 200), rng.uniform(30, 80), rng.uniform(-60, 60))
        b = quad(200 + rng.uniform(-30, 30), 200 + rng.uniform(-20, 20), rng.uniform(80, 200),
                 rng.uniform(30, 80), rng.uniform(-60, 60))
        in_a, in_b = MplPath(a).contains_points(pixels), MplPath(b).contains_points(pixels)
        raster = (in_a & in_b).sum() / (in_a | in_b).sum()
        assert ts.iou([a], [b])[0, 0] == pytest.approx(raster, abs=0.01)


def test_iou_of_exactly_one_half_misses_the_threshold_because_of_the_epsilon():
    gt = [(box(0, 0, 10, 10), "a")]
    half = ts.hiertext_image([(box(0, 0, 10, 20), "a")], gt)  # 100 / 200 -> 100 / (200 + 1e-5)
    assert half.tp_det == 0
    above = ts.hiertext_image([(box(0, 0, 10, 19.99), "a")], gt)  # 100 / 199.9
    assert above.tp_det == 1


@pytest.mark.parametrize("cover, dropped", [(0.49, False), (0.5, False), (0.5001, True), (0.51, True)])
def test_dont_care_filter_hiertext(cover, dropped):
    # The prediction [0,10]^2 (area 100) overlaps a ### word over `cover` of its area. HierText drops it
    # when inter / (100 + 1e-5) >= 0.5, so exactly one half is kept.
    pred = [(box(0, 0, 10, 10), "x")]
    gt = [(box(0, 10 - 10 * cover, 10, 30), "###"), (box(50, 50, 60, 60), "care")]
    counts = ts.hiertext_image(pred, gt)
    assert counts.dropped_dont_care == int(dropped)
    assert counts.num_pred == int(not dropped)
    assert counts.num_gt == 1


@pytest.mark.parametrize("cover, dropped", [(0.49, False), (0.5, False), (0.51, True)])
def test_dont_care_filter_rrc(cover, dropped):
    pred = [(box(0, 0, 10, 10), "x")]
    gt = [(box(0, 10 - 10 * cover, 10, 30), "###")]
    matched, num_gt, num_det = ts.rrc_detection_image(pred, gt)
    assert (matched, num_gt, num_det) == (0, 0, int(not dropped))


def test_mutual_best_differs_from_rrc_greedy_first_fit():
    # x-intervals, all 10 high: GT0 [0,100], GT1 [10,110], P0 [10,110], P1 [0,130].
    # IoU: GT0-P0 90/110, GT0-P1 100/130, GT1-P0 1, GT1-P1 100/130.
    # Mutual best: GT0's best is P0 but P0's best is GT1 -> only GT1-P0 (no second chance for GT0).
    # RRC greedy: GT0 takes the first pred over 0.5 (P0), GT1 then takes P1 -> 2 matches.
    gt = [(box(0, 0, 100, 10), "a"), (box(10, 0, 110, 10), "b")]
    pred = [(box(10, 0, 110, 10), "b"), (box(0, 0, 130, 10), "a")]
    counts = ts.hiertext_image(pred, gt)
    assert (counts.tp_det, counts.tp_e2e, counts.num_gt, counts.num_pred) == (1, 1, 2, 2)
    assert ts.rrc_detection_image(pred, gt) == (2, 2, 2)
    metrics, _ = ts.hiertext([pred], [gt])
    assert metrics["det_precision"] == metrics["det_recall"] == 0.5
    assert ts.rrc_detection([pred], [gt])["rrc_det_f1"] == 1.0


def test_rrc_needs_iou_strictly_above_one_half():
    gt = [(box(0, 0, 10, 10), "a")]
    assert ts.rrc_detection_image([(box(0, 0, 10, 20), "a")], gt)[0] == 0
    assert ts.rrc_detection_image([(box(0, 0, 10, 19), "a")], gt)[0] == 1


def test_ties_go_to_the_first_index():
    same = box(0, 0, 10, 10)
    # Two identical predictions: the GT takes the first; the second is a false positive.
    counts = ts.hiertext_image([(same, "wrong"), (same, "right")], [(same, "right")])
    assert (counts.tp_det, counts.tp_e2e, counts.num_pred) == (1, 0, 2)
    # Two identical GT words: the prediction's best is the first GT, which matches; the second misses.
    counts = ts.hiertext_image([(same, "b")], [(same, "a"), (same, "b")])
    assert (counts.tp_det, counts.tp_e2e, counts.num_gt) == (1, 0, 2)


def test_text_match_is_exact_and_case_sensitive():
    gt = [(box(0, 0, 10, 10), "Hello"), (box(20, 0, 30, 10), "World!")]
    pred = [(box(0, 0, 10, 10), "hello"), (box(20, 0, 30, 10), "World!")]
    metrics, (counts,) = ts.hiertext([pred], [gt])
    assert (counts.tp_det, counts.tp_e2e) == (2, 1)
    assert metrics["det_f1"] == 1.0
    assert metrics["e2e_precision"] == metrics["e2e_recall"] == metrics["e2e_f1"] == 0.5
    no_punct = ts.hiertext_image([(box(20, 0, 30, 10), "World")], gt[1:])
    assert no_punct.tp_e2e == 0


def test_empty_denominators_give_one():
    metrics, _ = ts.hiertext([[]], [[]])
    assert all(v == 1.0 for v in metrics.values())
    only_preds, _ = ts.hiertext([[(box(0, 0, 1, 1), "a")]], [[]])
    assert (only_preds["det_precision"], only_preds["det_recall"], only_preds["det_f1"]) == (0.0, 1.0, 0.0)
    only_gt, _ = ts.hiertext([[]], [[(box(0, 0, 1, 1), "a")]])
    assert (only_gt["e2e_precision"], only_gt["e2e_recall"], only_gt["e2e_f1"]) == (1.0, 0.0, 0.0)
    # Predictions that all fall on don't-care words leave no denominator either.
    dropped, _ = ts.hiertext([[(box(0, 0, 10, 10), "x")]], [[(box(0, 0, 10, 10), "###")]])
    assert dropped["det_precision"] == dropped["det_recall"] == 1.0
    assert ts.rrc_detection([[]], [[]]) == {"rrc_det_precision": 0.0, "rrc_det_recall": 0.0,
                                             "rrc_det_f1": 0.0}


def test_counts_are_summed_over_images():
    # Image 1: 2 GT, 2 predictions, both det TP, one with the right text.
    # Image 2: 3 GT (+1 ###), 1 prediction, det TP with the right text; 1 prediction on the ### dropped.
    # Image 3: no GT, 2 predictions (false positives).
    img1 = ([(box(0, 0, 10, 10), "A"), (box(20, 0, 30, 10), "b")],
            [(box(0, 0, 10, 10), "A"), (box(20, 0, 30, 10), "B")])
    img2 = ([(box(0, 0, 10, 10), "C"), (box(100, 100, 110, 110), "zz")],
            [(box(0, 0, 10, 10), "C"), (box(20, 0, 30, 10), "D"), (box(40, 0, 50, 10), "E"),
             (box(100, 100, 110, 110), "###")])
    img3 = ([(box(0, 0, 5, 5), "F"), (box(10, 10, 15, 15), "G")], [])
    metrics, per_image = ts.hiertext(*zip(img1, img2, img3))
    total = sum(per_image, ts.SpottingCounts())
    assert (total.num_gt, total.num_pred, total.tp_det, total.tp_e2e) == (5, 5, 3, 2)
    assert total.dropped_dont_care == 1
    assert metrics["det_precision"] == pytest.approx(3 / 5)
    assert metrics["det_recall"] == pytest.approx(3 / 5)
    assert metrics["e2e_precision"] == pytest.approx(2 / 5)
    assert metrics["e2e_f1"] == pytest.approx(2 / 5)


def test_invalid_and_empty_polygons_are_counted_not_raised():
    bowtie = [(0, 0), (10, 10), (10, 0), (0, 10)]  # self-intersecting; make_valid -> 2 triangles, area 50
    line = [(0, 0), (5, 5), (10, 10), (0, 0)]  # zero area
    assert ts.iou([box(0, 0, 10, 10)], [bowtie])[0, 0] == pytest.approx(50 / (100 + ts.EPSILON))
    assert ts.iou([box(0, 0, 10, 10)], [line])[0, 0] == 0.0
    counts = ts.hiertext_image([(bowtie, "a"), (line, "a")], [(box(0, 0, 10, 10), "a"), (line, "b")])
    assert counts.invalid_polygons == 3  # the bowtie and both zero-area polygons are invalid to shapely
    assert counts.empty_polygons == 2
    assert (counts.tp_det, counts.num_pred, counts.num_gt) == (0, 2, 2)
    assert ts.rrc_detection_image([(bowtie, "a"), (line, "a")], [(box(0, 0, 10, 10), "a")]) == (0, 1, 2)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 prediction lists for 1 images"):
        ts.hiertext([[], []], [[]])
