"""ANLS (Average Normalized Levenshtein Similarity), as DocVQA's official RRC script computes it.

Reference: the RRC standalone DocVQA / InfographicVQA evaluation script (docvqa.org, rrc.cvc.uab.es ch=17);
semantics in docs/metric-facts.md §2. Per question with answers g_1..g_k and prediction p:

- normalize both sides: strip, lowercase, collapse whitespace runs to one space;
- NL_i = Levenshtein(norm(g_i), norm(p)) / max(len(g_i.upper()), len(p.upper())) on the RAW strings
  (so padding whitespace lengthens the denominator, and "ß".upper() == "SS" counts two), 0 when that is 0;
- q = 1 - min_i NL_i, set to 0 when q < 0.5 (a score of exactly 0.5 is kept).

`anls_bv` is big_vision's `anls_metric` as the PaliGemma DocVQA transfer logs it (`to_lower=True`,
docs/metric-facts.md §2 / docs/paligemma2-facts.md §2.7): lowercase only, no strip or whitespace collapsing, length of
the lowercased strings, kept only when NL < 0.5 (exactly 0.5 -> 0), and an empty answer scores 1 only for
an empty prediction. Kept under its own name for comparison with big_vision logs; `anls` is the headline.
"""

from __future__ import annotations

from collections.abc import Sequence

import editdistance

THRESHOLD = 0.5


def _normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls_score(prediction: str, answers: Sequence[str], threshold: float = THRESHOLD) -> float:
    """RRC ANLS of one prediction against its answers."""
    if not answers:
        raise ValueError("anls_score needs at least one ground-truth answer")
    pred = _normalize(prediction)
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        dist = editdistance.eval(_normalize(answer), pred)
        distances.append(0.0 if length == 0 else dist / length)
    score = 1.0 - min(distances)
    return 0.0 if score < threshold else score


def anls_bv_score(prediction: str, answers: Sequence[str], threshold: float = THRESHOLD) -> float:
    """big_vision's ANLS of one prediction (max over answers), with DocVQA's to_lower=True."""
    if not answers:
        raise ValueError("anls_bv_score needs at least one ground-truth answer")
    pred = prediction.lower()
    best = 0.0
    for answer in answers:
        target = answer.lower()
        if not target:
            best = max(best, float(pred == ""))
            continue
        nl = editdistance.eval(target, pred) / max(len(target), len(pred))
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def anls_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[float]:
    """Per-question RRC ANLS."""
    _check_lengths(predictions, answers)
    return [anls_score(p, a) for p, a in zip(predictions, answers)]


def anls_bv_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[float]:
    """Per-question big_vision ANLS."""
    _check_lengths(predictions, answers)
    return [anls_bv_score(p, a) for p, a in zip(predictions, answers)]


def anls(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Dataset means: "anls" (RRC, the official number) and "anls_bv" (big_vision's variant)."""
    rrc, bv = anls_scores(predictions, answers), anls_bv_scores(predictions, answers)
    n = len(rrc)
    return {"anls": sum(rrc) / n if n else 0.0, "anls_bv": sum(bv) / n if n else 0.0}


def _check_lengths(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
