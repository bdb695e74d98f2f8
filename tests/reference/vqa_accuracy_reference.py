"""VQA accuracy written a second time, plainly, from its documented definition: a test-only reference.

Written from the VQA challenge's evaluation description (visualqa.org "Evaluation": accuracy =
min(#humans that gave the answer / 3, 1), averaged over the 10 choose 9 subsets of human answers; answers are
lowercased, numbers written as digits, punctuation and articles removed, contractions added) and from the
exact behaviour of the official script as docs/metric-facts.md §1 describes it. It shares no code with
metrics/vqa.py, and it favours the literal reading over speed: every rule is one visible step, character by
character, with no regular expressions.

The contraction table (about 120 entries) is data of the official script that no prose lists. This reference
takes it from tests/fixtures/vqa_official_golden.json, where each key was fed alone to the official
normalization and its output recorded; so the table here is what the official script did, not what
metrics/vqa.py holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

GOLDEN = Path(__file__).parent.parent / "fixtures" / "vqa_official_golden.json"

# The characters the script turns into a space (or deletes, see strip_punctuation); no apostrophe, no colon.
PUNCTUATION = frozenset(';/[]"{}()=+\\_-><@`,?!')
# At most this many periods are deleted per answer: the script passes re.UNICODE (32) where `count` goes.
PERIOD_LIMIT = 32
NUMBERS_IN_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
DIGIT_WORDS = {word: str(n) for n, word in enumerate(NUMBERS_IN_WORDS)} | {"none": "0"}
ARTICLES = frozenset({"a", "an", "the"})


def _contractions() -> dict[str, str]:
    cases = json.loads(GOLDEN.read_text(encoding="utf-8"))["normalization_cases"]
    return {c["contraction_key"]: c["official_normalized"] for c in cases if "contraction_key" in c}


CONTRACTIONS = _contractions()


def tidy_whitespace(text: str) -> str:
    """Tabs and newlines count as spaces; the ends are trimmed."""
    for ch in "\t\n":
        text = text.replace(ch, " ")
    return text.strip()


def _is_digit(ch: str) -> bool:
    return ch.isdecimal()  # what a regex \d matches on str (every Unicode Nd character)


def strip_punctuation(text: str) -> str:
    """Each listed character becomes a space, unless it touches a space somewhere in the text, or the text
    holds a digit,digit comma anywhere: then that character is deleted instead. Afterwards the first 32
    periods not directly followed by a digit are deleted."""
    has_digit_comma = any(text[i] == "," and _is_digit(text[i - 1]) and _is_digit(text[i + 1])
                          for i in range(1, len(text) - 1))
    deleted = {ch for ch in PUNCTUATION if has_digit_comma or ch + " " in text or " " + ch in text}
    chars = []
    for ch in text:
        if ch in deleted:
            continue
        chars.append(" " if ch in PUNCTUATION else ch)
    kept, periods_deleted = [], 0
    for i, ch in enumerate(chars):
        next_is_digit = i + 1 < len(chars) and _is_digit(chars[i + 1])
        if ch == "." and not next_is_digit and periods_deleted < PERIOD_LIMIT:
            periods_deleted += 1
            continue
        kept.append(ch)
    return "".join(kept)


def normalize_words(text: str) -> str:
    """Lowercase, split on whitespace, number words to digits, drop articles, expand contractions."""
    words = [DIGIT_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize(text: str) -> str:
    """The full normalization the script applies when the human answers disagree."""
    return normalize_words(strip_punctuation(text))


def accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's accuracy in [0, 1]: for every way of leaving one human answer out, count the
    remaining answers equal to the prediction, credit min(count / 3, 1), and average the credits."""
    if len(answers) == 0:
        raise ValueError("a VQA question needs at least one human answer")
    answers = [tidy_whitespace(a) for a in answers]
    prediction = tidy_whitespace(prediction)
    if len(set(answers)) > 1:  # unanimous answers are compared as they are, case and all
        answers = [normalize(a) for a in answers]
        prediction = normalize(prediction)
    credits = []
    for left_out in range(len(answers)):
        others = answers[:left_out] + answers[left_out + 1:]
        credits.append(min(Fraction(others.count(prediction), 3), Fraction(1)))
    return float(sum(credits) / len(credits))


def dataset_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                     answer_types: Sequence[str]) -> dict[str, float]:
    """Mean accuracy over questions ("overall") and per answer type (the type's name as the key)."""
    per_question = [accuracy(p, a) for p, a in zip(predictions, answers, strict=True)]
    out = {"overall": sum(per_question) / len(per_question)}
    for answer_type in sorted(set(answer_types)):
        mine = [s for s, t in zip(per_question, answer_types, strict=True) if t == answer_type]
        out[answer_type] = sum(mine) / len(mine)
    return out
