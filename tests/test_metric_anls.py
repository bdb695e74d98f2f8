"""ANLS: hand-computed cases for the RRC definition and big_vision's variant, and parity with the RRC
script's scoring loop (tests/reference/anls_rrc_official.py) on random inputs."""

import random

import pytest

from metrics.anls import anls, anls_bv_score, anls_score
from tests.reference.anls_rrc_official import dataset_score, question_score

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
    assert question_score(answers, prediction) == pytest.approx(rrc)


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


def _random_text(rng):
    alphabet = "abAB ß1/.-"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))


def test_parity_with_the_rrc_script_on_random_inputs():
    rng = random.Random(0)
    predictions, answers = [], []
    for _ in range(2000):
        gts = [_random_text(rng) for _ in range(rng.randint(1, 3))]
        pred = rng.choice(gts) if rng.random() < 0.2 else _random_text(rng)
        predictions.append(pred)
        answers.append(gts)
    ours = [anls_score(p, a) for p, a in zip(predictions, answers)]
    theirs = [question_score(a, p) for p, a in zip(predictions, answers)]
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert anls(predictions, answers)["anls"] == pytest.approx(dataset_score(answers, predictions), abs=1e-12)
    # The inputs reach the threshold, the exact boundary, and partial credit.
    assert 0.5 in ours and 0.0 in ours and any(0.5 < s < 1 for s in ours)
