"""VQA accuracy, exactly as the official VQA evaluation computes it.

Reference: GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py` at HEAD (a013f00, 2021,
"Fixed processing answers bug"); semantics in docs/metric-facts.md §1. Older copies of that script differ (they
always normalize the prediction but not the answers, and have another punctuation list): pin HEAD.

Per question, with the (usually 10) human answers:
1. whitespace: newline and tab become spaces, then strip (prediction and every answer);
2. only if the answers are NOT all identical, the prediction and every answer are normalized
   (punctuation, then number words / articles / contractions, lowercase). Unanimous answers are compared
   raw, case-sensitively: "Yes" scores 0 against ten "yes";
3. accuracy = mean over the leave-one-out subsets (drop answer i by index) of min(1, matches / 3), which
   gives 0, 0.3, 0.6, 0.9, 1.0 for 0, 1, 2, 3, >=4 matching answers out of 10.

Values are fractions in [0, 1]; the official script reports 100 x the mean rounded to 2 decimals, we keep
the unrounded mean (tables multiply by 100).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

# The 21 characters of HEAD's list (an older revision had ':' and "'" and lacked '{', '}', '-', '!').
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

# The official pattern, kept as written: it meant "a period not preceded by a digit" but the look-behind is
# typed as a negative look-ahead for the literal text "<=" + digit, so in effect it deletes every period
# not followed by a digit ("2.5" keeps its period, "5." and "a.b" lose theirs).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The official call passes re.UNICODE (= 32) in the `count` position, so at most 32 periods are deleted.
_MAX_PERIODS_DELETED = int(re.UNICODE)
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# HEAD's contraction table, entry for entry (straight apostrophes at HEAD; the pre-2017 revision used
# typographic ones). Quirks kept: "somebody'd" maps to "somebodyd", and the capitalised keys ("Im", "Ive",
# "Id've", "I'dve") can never match because words are lowercased first.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}

# The answer types of VQAv2 annotations, and the metric-key suffix each is reported under.
ANSWER_TYPES: dict[str, str] = {"yes/no": "yesno", "number": "number", "other": "other"}


def clean_whitespace(text: str) -> str:
    """Step 1, applied to every answer and the prediction: newline/tab -> space, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """Delete or space out punctuation, then delete periods that are not followed by a digit.

    A character is deleted (not replaced by a space) when the text has it next to a space, or when the
    text contains a digit-comma-digit pattern anywhere: the official script tests the pattern inside the
    per-character loop, so "1,000 (approx)" deletes the parentheses too. big_vision keeps this quirk.
    """
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if f"{p} " in text or f" {p}" in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_MAX_PERIODS_DELETED)


def process_digit_article(text: str) -> str:
    """Lowercase, number words -> digits, drop articles, expand contractions, single spaces."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """The official normalization (punctuation, then digits/articles); only used when answers disagree."""
    return process_digit_article(process_punctuation(text))


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against its human answers (10 in VQAv2).

    Computed exactly: with m matches among n answers, leaving out a matching answer leaves m-1 matches
    and leaving out another leaves m, so the score is sum_i min(3, matches without i) / (3 n).
    """
    if not answers:
        raise ValueError("vqa_score needs at least one ground-truth answer")
    answers = [clean_whitespace(a) for a in answers]
    prediction = clean_whitespace(prediction)
    if len(set(answers)) > 1:
        answers = [normalize_answer(a) for a in answers]
        prediction = normalize_answer(prediction)
    matches = [a == prediction for a in answers]
    total = sum(matches)
    # Leave-one-out by index: each answer is dropped once even when several are equal strings.
    numerator = sum(min(3, total - int(m)) for m in matches)
    return float(Fraction(numerator, 3 * len(answers)))


def vqa_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[float]:
    """Per-question VQA accuracy."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    return [vqa_score(p, a) for p, a in zip(predictions, answers)]


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                 answer_types: Sequence[str] | None = None) -> dict[str, float]:
    """Mean VQA accuracy ("accuracy") and, given answer types, "accuracy/yesno|number|other"."""
    return summarize(vqa_scores(predictions, answers), answer_types)


def summarize(scores: Sequence[float], answer_types: Sequence[str] | None = None) -> dict[str, float]:
    """Per-question scores -> the overall mean and, given answer types, the mean per type.

    A type with no question is left out rather than reported as 0.
    """
    metrics = {"accuracy": sum(scores) / len(scores) if scores else 0.0}
    if answer_types is not None:
        if len(answer_types) != len(scores):
            raise ValueError(f"{len(answer_types)} answer types but {len(scores)} questions")
        by_type: dict[str, list[float]] = {}
        for score, answer_type in zip(scores, answer_types):
            by_type.setdefault(answer_type, []).append(score)
        for answer_type, values in sorted(by_type.items()):
            metrics[f"accuracy/{ANSWER_TYPES.get(answer_type, answer_type)}"] = sum(values) / len(values)
    return metrics
