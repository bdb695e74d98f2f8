"""VQA accuracy against the official vqaEval.py's recorded outputs (tests/fixtures/vqa_official_golden.json),
for both metrics/vqa.py and an independent plain reference (tests/reference/vqa_accuracy_reference.py), plus
the two against each other on fresh random inputs and a few hand-derived checks of the matching ladder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from metrics.vqa import (
    CONTRACTIONS,
    NUMBER_WORDS,
    PUNCTUATION,
    normalize_answer,
    vqa_accuracy,
    vqa_score,
)
from tests.reference import vqa_accuracy_reference as reference

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "vqa_official_golden.json").read_text("utf-8"))

NORMALIZERS = {"metrics/vqa.py": normalize_answer, "reference": reference.normalize}
SCORERS = {"metrics/vqa.py": vqa_score, "reference": reference.accuracy}


def test_golden_file_names_its_source_and_covers_every_rule():
    header = GOLDEN["header"]
    assert {"official_script", "source", "version", "produced_by"} <= set(header)
    rules = {c["rule"].split(":")[0] for c in GOLDEN["normalization_cases"] + GOLDEN["score_cases"]}
    for rule in ["lowercase", "period", "digit-comma-digit", "articles dropped as whole words",
                 "number words", "contractions", "whitespace", "empty string", "matching ladder",
                 "leave-one-out drops by index, not by value", "unanimous answers compared raw",
                 "answer count != 10", "no answers"]:
        assert rule in rules, rule
    assert len(GOLDEN["random_batch"]["cases"]) >= 500


@pytest.mark.parametrize("name", NORMALIZERS)
def test_normalization_matches_the_official_script(name):
    normalize = NORMALIZERS[name]
    wrong = [f"{c['rule']}: {c['text']!r} -> {normalize(c['text'])!r}, official {c['official_normalized']!r}"
             for c in GOLDEN["normalization_cases"] if normalize(c["text"]) != c["official_normalized"]]
    assert not wrong, f"{name} differs from vqaEval.py on {len(wrong)} cases:\n" + "\n".join(wrong[:20])


def _official_percent(score: float) -> float:
    """What evalQA holds for a question: 100 x accuracy rounded to 10 decimals (the fixture's n=10)."""
    return round(100 * score, 10)


@pytest.mark.parametrize("name", SCORERS)
def test_scores_match_the_official_script(name):
    score = SCORERS[name]
    for case in GOLDEN["score_cases"]:
        prediction, answers, rule = case["prediction"], case["answers"], case["rule"]
        if "official_error" in case:  # the official script crashes; we refuse with a clear error
            with pytest.raises(ValueError, match="at least one"):
                score(prediction, answers)
            continue
        got = _official_percent(score(prediction, answers))
        assert got == case["official_evalQA"], (
            f"{name}, rule '{rule}': {prediction!r} vs {answers!r} scored {got}, "
            f"official {case['official_evalQA']}")


@pytest.mark.parametrize("name", SCORERS)
def test_random_questions_match_the_official_script(name):
    score = SCORERS[name]
    batch = GOLDEN["random_batch"]
    wrong = [f"{c['prediction']!r} vs {c['answers']!r}: {_official_percent(score(c['prediction'], c['answers']))}"
             f", official {c['official_evalQA']}"
             for c in batch["cases"]
             if _official_percent(score(c["prediction"], c["answers"])) != c["official_evalQA"]]
    assert not wrong, f"{name}, rule '{batch['rule']}', {len(wrong)} differ:\n" + "\n".join(wrong[:20])
    # The batch reaches every branch: unanimous answers, zero, full and partial credit.
    values = {c["official_evalQA"] for c in batch["cases"]}
    assert {0.0, 100.0} <= values and any(0 < v < 100 for v in values)
    assert any(len(set(c["answers"])) == 1 for c in batch["cases"])


def test_dataset_and_per_type_means_match_the_official_script():
    cases = GOLDEN["random_batch"]["cases"]
    official = GOLDEN["random_batch"]["official_accuracy"]
    predictions = [c["prediction"] for c in cases]
    answers = [c["answers"] for c in cases]
    types = [c["answer_type"] for c in cases]
    ours = vqa_accuracy(predictions, answers, types)
    theirs = reference.dataset_accuracy(predictions, answers, types)
    assert 100 * ours["accuracy"] == pytest.approx(official["overall"], abs=1e-9)
    assert 100 * theirs["overall"] == pytest.approx(official["overall"], abs=1e-9)
    for answer_type, key in [("yes/no", "yesno"), ("number", "number"), ("other", "other")]:
        assert 100 * ours[f"accuracy/{key}"] == pytest.approx(official["perAnswerType"][answer_type], abs=1e-9)
        assert 100 * theirs[answer_type] == pytest.approx(official["perAnswerType"][answer_type], abs=1e-9)


def test_tables_are_the_official_ones():
    """Every contraction key, punctuation character and number word the official script knows has a golden
    case (whose output the normalization tests check), and metrics/vqa.py knows no others."""
    cases = GOLDEN["normalization_cases"]
    assert set(CONTRACTIONS) == {c["contraction_key"] for c in cases if "contraction_key" in c}
    assert len(CONTRACTIONS) == 120
    assert set(PUNCTUATION) == {c["char"] for c in cases if "char" in c} == reference.PUNCTUATION
    assert len(PUNCTUATION) == 21
    assert set(NUMBER_WORDS) == {c["text"] for c in cases if c["rule"].startswith("number word '")}
    assert NUMBER_WORDS == reference.DIGIT_WORDS


def _fresh_text(rng: random.Random) -> str:
    pieces = ["yes", "No", "two", "Ten", "none", "the", "a", "An", "dont", "isnt", "Im", "1,000", "3.5", "5.",
              "..", "t-shirt", "red, blue", "(x)", "it's", "10:30", "\u0661,\u0662", "\u00df", "\t", "\n",
              "  ", "?", "!", "/", "\\", "@", "somebody'd", "oclock", "y'all'dve", "4"]
    chars = "ab1,. -()!;'"
    parts = [rng.choice(pieces) if rng.random() < 0.7 else
             "".join(rng.choice(chars) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 4))]
    return rng.choice(["", " "]).join(parts)


def test_metrics_agree_with_the_reference_on_fresh_random_inputs():
    rng = random.Random(20261130)
    for _ in range(1500):
        text = _fresh_text(rng)
        assert normalize_answer(text) == reference.normalize(text), repr(text)
    for _ in range(1500):
        pool = [_fresh_text(rng) for _ in range(rng.randint(1, 4))]
        answers = [rng.choice(pool) for _ in range(rng.choice([10, 10, 10, 1, 3, 7]))]
        prediction = rng.choice(pool) if rng.random() < 0.6 else _fresh_text(rng)
        assert vqa_score(prediction, answers) == reference.accuracy(prediction, answers), (prediction, answers)


@pytest.mark.parametrize("k,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_matching_ladder(k, expected):
    # k matching answers among 10. Leave-one-out: dropping one of the k leaves k-1 matches, dropping one of
    # the 10-k others leaves k, so acc = (k*min(1,(k-1)/3) + (10-k)*min(1,k/3)) / 10:
    # k=1: 9*(1/3)/10 = 0.3; k=2: (2/3 + 8*2/3)/10 = 0.6; k=3: (3*2/3 + 7)/10 = 0.9; k=4: (4 + 6)/10 = 1.
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert vqa_score("cat", answers) == expected


def test_per_answer_type_means():
    metrics = vqa_accuracy(["yes", "2", "red"], [["yes"] * 10, ["2"] * 3 + ["3"] * 7, ["blue"] * 10],
                           ["yes/no", "number", "other"])
    assert metrics == pytest.approx({"accuracy": (1.0 + 0.9 + 0.0) / 3, "accuracy/yesno": 1.0,
                                     "accuracy/number": 0.9, "accuracy/other": 0.0})
