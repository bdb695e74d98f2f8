"""Metric speed: our metrics against the straightforward implementations, same inputs, same run.

    python -m bench.metrics_speed              # TEDS on 1,000 tables, CIDEr on 5,000 images (~1 min)
    python -m bench.metrics_speed --large      # TEDS on larger tables (5-20 body rows x 3-8 columns)

TEDS: `metrics.teds` against tests/reference/teds_reference.py (PubTabNet's official algorithm written
plainly: lxml, the `apted` package, a pure-Python Levenshtein like the official `distance` dependency).
Ground truths come from the PubTabNet demo generator's `random_table` at 2-6 body rows x 2-5 columns
(larger than the demo's own tables, which are sized for tiny models); predictions are what a model gets
wrong: 20% exact copies, 10% another table, 70% copies with one to three errors (a cell's text edited, a
cell or a row dropped, spans lost, `<th>` for `<td>`). The two run pair by pair in turn (one process, no
parallelism); the speed-up is reported over all pairs and, because identical tables short-cut, over the
non-identical ones alone. Target: >= 10x with the same scores: bit-identical except where APTED adds
the same costs in another order (then the last bit may differ); exit status 1 if any score differs by
more than 1e-12.

CIDEr: `metrics.captioning.score_captions` against pycocoevalcap's PTBTokenizer + Cider called directly
(tokenizer once for the references and once for the predictions, as its own example code does), on the
captions of 5,000 scenes of the COCO demo generator (5 references each; the prediction is half the time
a caption of the same scene, else one of another scene), best of three alternating runs (the JVM start
varies). Target: the same score, no slower.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import sys
import time

import numpy as np

from metrics import teds
from tasks.demo import pubtabnet as table_demo
from tasks.pubtabnet import gt_html
from tests.reference import teds_reference


# --- TEDS -------------------------------------------------------------------------------------------
def _damage(html: str, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # a character added to one cell's text
        cells = html.split("</td>")
        k = rng.randrange(len(cells) - 1)
        cells[k] += rng.choice("0123456789.x")
        return "</td>".join(cells)
    if kind == 1:  # a cell dropped
        starts = [m.start() for m in re.finditer("<td", html)]
        start = rng.choice(starts) if starts else 0
        end = html.find("</td>", start)
        return html if end < 0 else html[:start] + html[end + len("</td>"):]
    if kind == 2:  # a row dropped
        rows = html.split("<tr>")
        del rows[rng.randrange(1, len(rows))]
        return "<tr>".join(rows)
    if kind == 3:  # spans lost
        return html.replace(' colspan="2"', "").replace(' rowspan="2"', "")
    return html.replace("<td>", "<th>", 2).replace("</td>", "</th>", 2)  # header cells as <th>


def table_pairs(num: int, seed: int, large: bool) -> list[tuple[str, str]]:
    """(prediction, ground truth) documents."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    shape = {"body_rows": (5, 20), "cols": (3, 8)} if large else {"body_rows": (2, 6), "cols": (2, 5)}
    truths = []
    for _ in range(num):
        table = table_demo.random_table(nrng, **shape)
        no_boxes = [None] * len(table_demo.cells_in_order(table))
        truths.append(gt_html(table_demo.annotation(table, no_boxes, "x.png", "val", 0)))
    pairs = []
    for true in truths:
        draw = rng.random()
        if draw < 0.2:
            pred = true
        elif draw < 0.3:
            pred = truths[rng.randrange(num)]
        else:
            pred = true
            for _ in range(rng.randint(1, 3)):
                pred = _damage(pred, rng)
        pairs.append((pred, true))
    return pairs


def _interleaved(functions, pairs) -> tuple[list[list[float]], list[list[float]]]:
    """Scores and seconds of each function on each pair, timed pair by pair in turn, so that the load
    of a shared machine falls on both alike."""
    scores = [[] for _ in functions]
    seconds = [[] for _ in functions]
    gc.collect()
    gc.disable()  # a collection triggered by one side's garbage would be billed to the other
    try:
        for pred, true in pairs:
            for k, fn in enumerate(functions):
                start = time.perf_counter()
                scores[k].append(fn(pred, true))
                seconds[k].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return scores, seconds


def teds_section(num: int, seed: int, large: bool) -> bool:
    pairs = table_pairs(num, seed, large)
    size = "5-20 body rows x 3-8 columns" if large else "2-6 body rows x 2-5 columns"
    identical = [pred == true for pred, true in pairs]
    print(f"TEDS: {num} generated tables ({size}); {sum(identical)} predictions are exact copies")
    (ref_scores, our_scores), (ref_seconds, our_seconds) = _interleaved(
        [teds_reference.teds, teds.teds], pairs)
    ref_total, our_total = sum(ref_seconds), sum(our_seconds)
    changed = [not i for i in identical]
    ref_changed = sum(s for s, c in zip(ref_seconds, changed) if c)
    our_changed = sum(s for s, c in zip(our_seconds, changed) if c)
    print(f"  reference (apted + pure-Python Levenshtein): {ref_total:8.2f} s")
    print(f"  metrics.teds:                                {our_total:8.2f} s")
    print(f"  speed-up: {ref_total / our_total:.1f}x overall (target >= 10x); "
          f"{ref_changed / our_changed:.1f}x on the {sum(changed)} non-identical pairs")
    differences = [abs(a - b) for a, b in zip(ref_scores, our_scores)]
    same = sum(d == 0 for d in differences)
    print(f"  scores: {same}/{num} bit-identical", end="")
    if same < num:
        # APTED's path strategy sometimes adds the same rename costs in another order; the sums then
        # differ in the last bit (each side is the exact TED rounded along its own order).
        print(f"; {num - same} more equal up to the last bits (max |difference| {max(differences):.2g})",
              end="")
    print(f"; mean TEDS {np.mean(ref_scores):.12f} (reference), {np.mean(our_scores):.12f} (ours)")
    return max(differences) <= 1e-12


# --- CIDEr ------------------------------------------------------------------------------------------
def caption_sets(num: int, seed: int) -> tuple[dict[int, str], dict[int, list[str]]]:
    from tasks.demo.coco_captions import captions, sample_scene

    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(num)]
    references = {k: captions(*scene, rng) for k, scene in enumerate(scenes)}
    predictions = {k: captions(*(scenes[k] if rng.random() < 0.5 else rng.choice(scenes)), rng, k=1)[0]
                   for k in range(num)}
    return predictions, references


def pycocoevalcap_cider(predictions: dict, references: dict) -> float:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def cider_section(num: int, seed: int, repeats: int = 3) -> bool:
    from metrics.captioning import score_captions

    predictions, references = caption_sets(num, seed)
    print(f"CIDEr: {num} generated images (COCO demo scenes, 5 references each); best of {repeats}, "
          "alternating")
    direct_seconds, our_seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        direct = pycocoevalcap_cider(predictions, references)
        direct_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = score_captions(predictions, references, metrics=("cider",))["cider"]
        our_seconds.append(time.perf_counter() - start)
    print(f"  pycocoevalcap PTBTokenizer + Cider: {min(direct_seconds):6.2f} s  CIDEr {direct!r}")
    print(f"  metrics.captioning.score_captions:  {min(our_seconds):6.2f} s  CIDEr {ours!r}")
    print(f"  equal: {ours == direct}; time ours / theirs {min(our_seconds) / min(direct_seconds):.2f} "
          "(target <= 1)")
    return ours == direct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--large", action="store_true", help="TEDS on larger tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cider", action="store_true")
    args = parser.parse_args(argv)
    ok = teds_section(args.tables, args.seed, args.large)
    if not args.skip_cider:
        ok = cider_section(args.images, args.seed) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
