"""Word-level text detection and end-to-end recognition scores over polygons (ICDAR'15, Total-Text).

The headline protocol is HierText's, which PaliGemma 2 reports (docs/metric-facts.md §7.1; evaluator read at
google-research-datasets/hiertext `evaluator/evaluator.py` + `polygon_ops.py`, HEAD 70b6620), reproduced
here rule for rule, quirks included:

- ground-truth words whose text is `###` are don't-care;
- a prediction is dropped when intersection / (its area + 1e-5) with any don't-care word is >= 0.5; because
  of the 1e-5 a prediction covered by exactly half is *kept*;
- IoU = intersection / (union + 1e-5), so an IoU of exactly 0.5 does *not* reach the 0.5 threshold;
- self-intersecting polygons are repaired with shapely's `make_valid`; a polygon whose (repaired) area is
  below 1e-5 intersects nothing (IoU 0). Both are counted, never raised;
- GT i and prediction j match iff j = argmax_j IoU[i, :], i = argmax_i IoU[:, j] (ties -> first index) and
  IoU >= 0.5; no second chance. An end-to-end match also needs `pred_text == gt_text` (case-sensitive);
- counts are summed over images; P (R) is 1 when there are no predictions (GT words) at all.

`rrc_detection` adds the official RRC Challenge 4 task 4.1 localisation protocol (docs/metric-facts.md §7.2:
IoU > 0.5 strict, greedy first-fit in index order, don't-care when covered > 0.5), for comparison with the
literature only. It runs on shapely, not Polygon3, and repairs invalid polygons the same way as above.

A word is `(polygon, text)`; a polygon is a sequence of at least 3 `(x, y)` points (pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from shapely.geometry import Polygon
from shapely.validation import make_valid

DONT_CARE = "###"
EPSILON = 1e-5  # hiertext evaluator.py / polygon_ops.py
IOU_THRESHOLD = 0.5
DONT_CARE_THRESHOLD = 0.5

Point = Sequence[float]
Word = tuple[Sequence[Point], str]


@dataclass
class _Shapes:
    """Repaired shapely geometries of one image's words, their areas and axis-aligned boxes."""

    geoms: list
    areas: np.ndarray
    boxes: np.ndarray  # N x 4: xmin, ymin, xmax, ymax of the polygon as given
    num_invalid: int
    num_empty: int


def _shapes(polygons: Sequence[Sequence[Point]]) -> _Shapes:
    geoms, areas, boxes, invalid, empty = [], [], [], 0, 0
    for points in polygons:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3 or not np.isfinite(pts).all():
            raise ValueError(f"a polygon needs >= 3 finite (x, y) points, got {pts.tolist()}")
        poly = Polygon(pts)
        if not poly.is_valid:
            invalid += 1
            poly = make_valid(poly)
        if poly.area < EPSILON:
            empty += 1
        geoms.append(poly)
        areas.append(poly.area)
        boxes.append([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
    return _Shapes(geoms, np.asarray(areas, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4),
                   invalid, empty)


def _intersections(a: _Shapes, b: _Shapes) -> np.ndarray:
    """Intersection areas; zero where the axis-aligned boxes do not overlap or either area < 1e-5."""
    out = np.zeros((len(a.geoms), len(b.geoms)))
    for i, gi in enumerate(a.geoms):
        for j, gj in enumerate(b.geoms):
            ab, bb = a.boxes[i], b.boxes[j]
            overlap = ((min(ab[2], bb[2]) - max(ab[0], bb[0])) > 0
                       and (min(ab[3], bb[3]) - max(ab[1], bb[1])) > 0)
            if overlap and a.areas[i] >= EPSILON and b.areas[j] >= EPSILON:
                out[i, j] = gi.intersection(gj).area
    return out


def _iou(gt: _Shapes, pred: _Shapes) -> np.ndarray:
    inter = _intersections(gt, pred)
    union = gt.areas[:, None] + pred.areas[None, :] - inter
    return inter / (union + EPSILON)


def iou(polygons1: Sequence[Sequence[Point]], polygons2: Sequence[Sequence[Point]]) -> np.ndarray:
    """HierText's IoU matrix: intersection / (union + 1e-5), invalid polygons repaired, empty ones 0."""
    return _iou(_shapes(polygons1), _shapes(polygons2))


def _take(shapes: _Shapes, keep: np.ndarray) -> _Shapes:
    return _Shapes([shapes.geoms[k] for k in keep], shapes.areas[keep], shapes.boxes[keep],
                   shapes.num_invalid, shapes.num_empty)


@dataclass
class SpottingCounts:
    """Counts of one image or, summed with `+`, of a dataset (HierText accumulators plus diagnostics)."""

    num_gt: int = 0  # care GT words
    num_pred: int = 0  # predictions left after the don't-care filter
    tp_det: int = 0
    tp_e2e: int = 0
    dropped_dont_care: int = 0
    invalid_polygons: int = 0  # self-intersecting, repaired with make_valid (GT and predictions)
    empty_polygons: int = 0  # area < 1e-5 after repair: IoU 0 with everything (GT and predictions)

    def __add__(self, other: SpottingCounts) -> SpottingCounts:
        return SpottingCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                                 for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """det_/e2e_ precision, recall, F1 as fractions, with HierText's empty-denominator rule."""
        out = {}
        for kind, tp in (("det", self.tp_det), ("e2e", self.tp_e2e)):
            p = tp / self.num_pred if self.num_pred else 1.0
            r = tp / self.num_gt if self.num_gt else 1.0
            out[f"{kind}_precision"] = p
            out[f"{kind}_recall"] = r
            out[f"{kind}_f1"] = 2 * p * r / (p + r) if p + r else 0.0
        return out


def hiertext_image(predictions: Sequence[Word], references: Sequence[Word]) -> SpottingCounts:
    """HierText word-level counts of one image (the module docstring lists the rules)."""
    gt, pred = _shapes([p for p, _ in references]), _shapes([p for p, _ in predictions])
    counts = SpottingCounts(invalid_polygons=gt.num_invalid + pred.num_invalid,
                            empty_polygons=gt.num_empty + pred.num_empty)
    care = np.array([t != DONT_CARE for _, t in references], dtype=bool).reshape(-1)
    gt_texts = [t for _, t in references]
    pred_texts = [t for _, t in predictions]

    keep = np.arange(len(predictions))
    if (~care).any() and len(predictions):
        dont_care = _take(gt, np.flatnonzero(~care))
        precision = _intersections(pred, dont_care) / (pred.areas[:, None] + EPSILON)
        keep = np.flatnonzero(precision.max(axis=1) < DONT_CARE_THRESHOLD)
    counts.dropped_dont_care = len(predictions) - len(keep)
    pred, pred_texts = _take(pred, keep), [pred_texts[k] for k in keep]
    care_idx = np.flatnonzero(care)
    gt, gt_texts = _take(gt, care_idx), [gt_texts[k] for k in care_idx]

    counts.num_gt, counts.num_pred = len(gt_texts), len(pred_texts)
    if counts.num_gt and counts.num_pred:
        iou = _iou(gt, pred)
        best_pred = iou.argmax(axis=1)
        best_gt = iou.argmax(axis=0)
        for i, j in enumerate(best_pred):
            if iou[i, j] >= IOU_THRESHOLD and best_gt[j] == i:
                counts.tp_det += 1
                counts.tp_e2e += int(pred_texts[j] == gt_texts[i])
    return counts


def hiertext(predictions: Sequence[Sequence[Word]],
             references: Sequence[Sequence[Word]]) -> tuple[dict[str, float], list[SpottingCounts]]:
    """Dataset metrics (det_/e2e_ precision, recall, f1) and the per-image counts they are summed from.

    `predictions[k]` and `references[k]` are the words of image k.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction lists for {len(references)} images")
    per_image = [hiertext_image(p, r) for p, r in zip(predictions, references)]
    total = sum(per_image, SpottingCounts())
    return total.metrics(), per_image


def rrc_detection_image(predictions: Sequence[Word], references: Sequence[Word]) -> tuple[int, int, int]:
    """RRC task 4.1 counts of one image: (matched, care GT words, care detections)."""
    gt, pred = _shapes([p for p, _ in references]), _shapes([p for p, _ in predictions])
    gt_care = np.array([t != DONT_CARE for _, t in references], dtype=bool).reshape(-1)
    det_care = np.ones(len(predictions), dtype=bool)
    if (~gt_care).any() and len(predictions):
        inter = _intersections(pred, _take(gt, np.flatnonzero(~gt_care)))
        with np.errstate(divide="ignore", invalid="ignore"):
            cover = np.where(pred.areas[:, None] > 0, inter / pred.areas[:, None], 0.0)
        det_care = ~(cover > DONT_CARE_THRESHOLD).any(axis=1)
    matched = 0
    if len(references) and len(predictions):
        inter = _intersections(gt, pred)
        union = gt.areas[:, None] + pred.areas[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        gt_used = np.zeros(len(references), dtype=bool)
        det_used = np.zeros(len(predictions), dtype=bool)
        for i in np.flatnonzero(gt_care):
            for j in np.flatnonzero(det_care):
                if not gt_used[i] and not det_used[j] and iou[i, j] > IOU_THRESHOLD:
                    gt_used[i] = det_used[j] = True
                    matched += 1
    return matched, int(gt_care.sum()), int(det_care.sum())


def rrc_detection(predictions: Sequence[Sequence[Word]],
                  references: Sequence[Sequence[Word]]) -> dict[str, float]:
    """RRC localisation precision, recall, hmean (`rrc_det_*`); 0 when a denominator is 0, as RRC."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction lists for {len(references)} images")
    matched = num_gt = num_det = 0
    for p, r in zip(predictions, references):
        m, g, d = rrc_detection_image(p, r)
        matched, num_gt, num_det = matched + m, num_gt + g, num_det + d
    recall = matched / num_gt if num_gt else 0.0
    precision = matched / num_det if num_det else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"rrc_det_precision": precision, "rrc_det_recall": recall, "rrc_det_f1": f1}
