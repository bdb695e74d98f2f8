"""VQA accuracy: the official script's normalization edge cases, the matching ladder, and parity with a
Python 3 port of the official vqaEval.py (tests/reference/vqa_eval_official.py) on random inputs."""

import random

import pytest

from metrics.vqa import CONTRACTIONS, PUNCTUATION, normalize_answer, vqa_accuracy, vqa_score
from tests.reference.vqa_eval_official import VQAEval, QA, official_eval

NO_ANSWERS = QA({})


def official_normalize(text):
    ev = VQAEval(NO_ANSWERS, NO_ANSWERS)
    return ev.processDigitArticle(ev.processPunctuation(text))


# (input, normalized) pairs: each line is one rule of the official script.
NORMALIZATION_CASES = [
    ("Yes", "yes"),                       # lowercase
    ("yes.", "yes"),                      # a period not followed by a digit is deleted
    ("2.5", "2.5"),                       # ... but a period followed by a digit stays (decimals)
    ("5.", "5"),                          # trailing period after a digit goes (the look-behind is a typo)
    ("1,000", "1000"),                    # digit-comma-digit: punctuation is deleted, not spaced
    ("1,000 (approx)", "1000 approx"),    # the digit-comma rule deletes EVERY listed char, not just ','
    ("red,blue", "red blue"),             # no digit comma, no adjacent space: ',' becomes a space
    ("red, blue", "red blue"),            # ',' followed by a space: deleted
    ("t-shirt", "t shirt"),               # '-' is in HEAD's list (not in the pre-2017 one)
    ("t - shirt", "t shirt"),             # '-' next to a space: deleted, whitespace then collapses
    ("it's", "it's"),                     # apostrophe is not in HEAD's list
    ("10:30", "10:30"),                   # neither is the colon
    ("the dog", "dog"),                   # articles dropped ...
    ("a man in an apron", "man in apron"),
    ("theory", "theory"),                 # ... as whole words only
    ("two", "2"),                         # number words -> digits
    ("none", "0"),                        # 'none' counts as zero
    ("eleven", "eleven"),                 # only zero..ten are mapped
    ("dont", "don't"),                    # contractions table
    ("Isnt it", "isn't it"),              # lowercased before the table
    ("Im", "im"),                         # capitalised keys of the table never match (dead entries)
    ("somebody'd", "somebodyd"),          # the table's odd entry
    ("hello\tworld", "hello world"),      # whitespace split/join
    ("!?", ""),                           # punctuation-only answer becomes empty
    ("." * 40, "." * 8),                  # at most 32 periods are deleted (re.UNICODE passed as count)
]


@pytest.mark.parametrize("text,expected", NORMALIZATION_CASES)
def test_normalization_rules(text, expected):
    assert normalize_answer(text) == expected
    assert official_normalize(text) == expected


def test_tables_match_the_official_script():
    ev = VQAEval(NO_ANSWERS, NO_ANSWERS)
    assert CONTRACTIONS == ev.contractions
    assert len(CONTRACTIONS) == 120
    assert list(PUNCTUATION) == ev.punct and len(PUNCTUATION) == 21


def test_unanimous_answers_are_compared_raw_and_case_sensitive():
    assert vqa_score("Yes", ["yes"] * 10) == 0.0
    assert vqa_score("yes.", ["yes"] * 10) == 0.0
    assert vqa_score(" yes\n", ["yes"] * 10) == 1.0  # only the whitespace step runs
    # One disagreeing answer switches normalization on for everybody.
    assert vqa_score("Yes", ["yes"] * 9 + ["no"]) == 1.0


@pytest.mark.parametrize("k,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_matching_ladder(k, expected):
    # k matching answers among 10. Leave-one-out: dropping one of the k leaves k-1 matches, dropping one of
    # the 10-k others leaves k, so acc = (k*min(1,(k-1)/3) + (10-k)*min(1,k/3)) / 10:
    # k=1: 9*(1/3)/10 = 0.3; k=2: (2/3 + 8*2/3)/10 = 0.6; k=3: (3*2/3 + 7)/10 = 0.9; k=4: (4 + 6)/10 = 1.
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert vqa_score("cat", answers) == expected


def test_leave_one_out_drops_by_index_not_by_value():
    # Three equal matching strings: dropping one by index leaves two (2/3 each); dropping by value would
    # remove all three and leave 0. acc = (3*2/3 + 7*1) / 10 = 0.9.
    assert vqa_score("2", ["2", "2", "2"] + ["3"] * 7) == 0.9


def test_number_words_and_articles_match_after_normalization():
    answers = ["two", "2", "2 ", "two.", "three", "3", "3", "3", "3", "3"]
    # normalized: 2,2,2,2,3,3,3,3,3,3 -> prediction "Two" matches 4 -> 1.0; "the three" matches 6 -> 1.0
    assert vqa_score("Two", answers) == 1.0
    assert vqa_score("the three", answers) == 1.0
    assert vqa_score("four", answers) == 0.0


def test_per_answer_type_means():
    metrics = vqa_accuracy(["yes", "2", "red"], [["yes"] * 10, ["2"] * 3 + ["3"] * 7, ["blue"] * 10],
                           ["yes/no", "number", "other"])
    assert metrics == pytest.approx({"accuracy": (1.0 + 0.9 + 0.0) / 3, "accuracy/yesno": 1.0,
                                     "accuracy/number": 0.9, "accuracy/other": 0.0})


def test_needs_answers():
    with pytest.raises(ValueError, match="at least one"):
        vqa_score("x", [])


def _random_answer(rng):
    words = ["yes", "Yes", "no", "two", "2", "2.", "the cat", "a cat", "cat", "Cat!", "1,000", "1000",
             "dont", "don't", "t-shirt", "t shirt", "red, blue", "red,blue", "none", "0", " 3\n", "3",
             "(3)", "it's", "its", "5.5", "5,5", "a", "", "..."]
    return rng.choice(words) if rng.random() < 0.8 else " ".join(rng.choice(words) for _ in range(3))


def test_parity_with_the_official_script_on_random_inputs():
    rng = random.Random(0)
    predictions, answers, types = [], [], []
    for _ in range(600):
        pool = [_random_answer(rng) for _ in range(rng.randint(1, 4))]
        answers.append([rng.choice(pool) for _ in range(10)])
        predictions.append(rng.choice(pool) if rng.random() < 0.7 else _random_answer(rng))
        types.append(rng.choice(["yes/no", "number", "other"]))
    ours = vqa_accuracy(predictions, answers, types)
    official = official_eval(predictions, [list(a) for a in answers], types, n=10)
    per_question = [vqa_score(p, a) for p, a in zip(predictions, answers)]
    official_per_question = [official.evalQA[i] for i in range(len(per_question))]
    assert official_per_question == [round(100 * s, 10) for s in per_question]
    assert official.accuracy["overall"] == pytest.approx(100 * ours["accuracy"], abs=1e-9)
    for official_type, key in [("yes/no", "yesno"), ("number", "number"), ("other", "other")]:
        assert official.accuracy["perAnswerType"][official_type] == pytest.approx(
            100 * ours[f"accuracy/{key}"], abs=1e-9)
    # The random inputs exercise every branch: unanimous, disagreeing, and partial-credit questions.
    assert {0.0, 1.0} <= set(per_question) and any(0 < s < 1 for s in per_question)
    assert any(len(set(a)) == 1 for a in answers)
