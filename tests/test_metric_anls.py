"""ANLS against the RRC DocVQA script's recorded outputs (tests/fixtures/anls_official_golden.json), for both
metrics/anls.py and an independent plain reference (tests/reference/anls_reference.py), plus the two against
each other on fresh random inputs, and hand-computed cases for the RRC definition and big_vision's variant."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from metrics.anls import anls, anls_bv_score, anls_score
from tests.reference import anls_reference as reference

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "anls_official_golden.json").read_text("utf-8"))
SCORERS = {"metrics/anls.py": anls_score, "reference": reference.question_anls}

# (prediction, answers, RRC ANLS, big_vision ANLS), each computed by hand in the comment.
CASES = [
    # exact match after lowercasing: distance 0
    ("HELLO", ["hello"], 1.0, 1.0),
    # the 0.5 boundary: distance 1 / length 2 = 0.5. RRC keeps 1 - 0.5 (`q < 0.5 -> 0`), BV keeps only
    # NL < 0.5, so exactly 0.5 scores 0.
    ("ab", ["ax"], 0.5, 0.0),
    # padding: RRC strips and collapses before the distance (0) -> 1.0. BV compares raw: delete 2 leading,
    # 1 inner and 1 trailing space = 4 edits over max(15, 11) = 15 -> 1 - 4/15 = 11/15.
    ("  hello  world ", ["hello world"], 1.0, 11 / 15),
    # the .upper() length quirk: "ß".upper() == "SS", so RRC divides distance 1 by max(2, 1) = 2 -> 0.5
    # (kept); BV divides by len("ß") = 1 -> NL 1 -> 0.
    ("s", ["ß"], 0.5, 0.0),
    # ... and off the boundary: "ßx" vs "sx" is 1 edit; RRC length max(len("SSX"), len("SX")) = 3 -> 2/3;
    # BV length 2 -> NL 0.5 -> 0.
    ("sx", ["ßx"], 2 / 3, 0.0),
    # empty prediction, empty answer: RRC length 0 -> NL 0 -> 1; BV: empty target scores pred == "".
    ("", [""], 1.0, 1.0),
    # whitespace-only prediction vs empty answer: RRC normalizes both to "" (distance 0, length 2) -> 1;
    # BV: "  " != "" -> 0.
    ("  ", [""], 1.0, 0.0),
    # non-empty vs empty answer: distance 1 / length 1 -> 0 in both.
    ("x", [""], 0.0, 0.0),
    ("", ["abc"], 0.0, 0.0),
    # multiple answers: the best one counts. "1/8/9" vs "1/8/93" is 1 edit over 6 -> 5/6 (vs "1/8/1993"
    # it is 3 edits over 8 -> 5/8).
    ("1/8/9", ["1/8/1993", "1/8/93"], 5 / 6, 5 / 6),
    ("1/8/93", ["1/8/1993", "1/8/93"], 1.0, 1.0),
    # below threshold: 3 edits over 3 -> 0.
    ("abc", ["xyz"], 0.0, 0.0),
    # 2 edits over 7: 5/7 in both ("strasse" vs "straße": one substitution, one insertion).
    ("strasse", ["straße"], 5 / 7, 5 / 7),
]


@pytest.mark.parametrize("prediction,answers,rrc,bv", CASES)
def test_hand_computed(prediction, answers, rrc, bv):
    assert anls_score(prediction, answers) == pytest.approx(rrc)
    assert anls_bv_score(prediction, answers) == pytest.approx(bv)
    assert reference.question_anls(prediction, answers) == pytest.approx(rrc)


def test_dataset_means():
    predictions = [c[0] for c in CASES]
    answers = [c[1] for c in CASES]
    metrics = anls(predictions, answers)
    assert metrics["anls"] == pytest.approx(sum(c[2] for c in CASES) / len(CASES))
    assert metrics["anls_bv"] == pytest.approx(sum(c[3] for c in CASES) / len(CASES))


def test_needs_answers_and_equal_lengths():
    with pytest.raises(ValueError, match="at least one"):
        anls_score("x", [])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        anls(["a", "b"], [["a"]])


def test_golden_file_names_its_source_and_covers_every_rule():
    assert {"official_script", "source", "version", "produced_by"} <= set(GOLDEN["header"])
    rules = {c["rule"].split(":")[0] for c in GOLDEN["cases"]}
    for rule in ["case normalisation", "threshold", "whitespace", "upper() length quirk", "empty strings",
                 "multiple answers", "no answers"]:
        assert rule in rules, rule
    assert len(GOLDEN["random_batch"]["cases"]) >= 1000


@pytest.mark.parametrize("name", SCORERS)
def test_cases_match_the_official_script(name):
    score = SCORERS[name]
    for case in GOLDEN["cases"]:
        prediction, answers, rule = case["prediction"], case["answers"], case["rule"]
        if "official_error" in case:  # the official loop crashes; we refuse with a clear error
            with pytest.raises(ValueError, match="at least one"):
                score(prediction, answers)
            continue
        got = score(prediction, answers, case["threshold"])
        assert got == case["official_score"], (
            f"{name}, rule '{rule}': {prediction!r} vs {answers!r} scored {got!r}, official "
            f"{case['official_score']!r}")


@pytest.mark.parametrize("name", SCORERS)
def test_random_questions_match_the_official_script(name):
    score = SCORERS[name]
    batch = GOLDEN["random_batch"]
    wrong = [f"{c['prediction']!r} vs {c['answers']!r}: {score(c['prediction'], c['answers'])!r}, official "
             f"{c['official_score']!r}"
             for c in batch["cases"] if score(c["prediction"], c["answers"]) != c["official_score"]]
    assert not wrong, f"{name}, rule '{batch['rule']}', {len(wrong)} differ:\n" + "\n".join(wrong[:20])
    # The batch reaches the threshold, the exact 0.5 boundary, and partial credit.
    values = [c["official_score"] for c in batch["cases"]]
    assert 0.5 in values and 0 in values and any(0.5 < v < 1 for v in values)


def test_dataset_score_matches_the_official_script():
    cases = GOLDEN["random_batch"]["cases"]
    predictions = [c["prediction"] for c in cases]
    answers = [c["answers"] for c in cases]
    official = GOLDEN["random_batch"]["official_dataset_score"]
    assert anls(predictions, answers)["anls"] == pytest.approx(official, abs=1e-12)
    assert reference.dataset_anls(predictions, answers) == pytest.approx(official, abs=1e-12)


def _fresh_text(rng: random.Random) -> str:
    alphabet = "abcAB \t\n\u00df\u0130\ufb01\u00e9.-/1"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def test_metrics_agree_with_the_reference_on_fresh_random_inputs():
    rng = random.Random(20261130)
    for _ in range(2000):
        answers = [_fresh_text(rng) for _ in range(rng.randint(1, 4))]
        prediction = _fresh_text(rng) if rng.random() < 0.7 else rng.choice(answers).upper() + rng.choice(["", " "])
        tau = rng.choice([0.5, 0.5, 0.5, 0.3, 0.8])
        assert anls_score(prediction, answers, tau) == reference.question_anls(prediction, answers, tau), (
            prediction, answers, tau)
