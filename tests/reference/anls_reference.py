"""ANLS written a second time, plainly, from its documented definition: a test-only reference.

The DocVQA / ST-VQA papers define, for a question with answers a_1..a_M and prediction o,
s = max_j (1 - NL(a_j, o)), with NL the Levenshtein distance over the longer length, and s zeroed when it
fails the threshold tau = 0.5; ANLS is the mean of s over questions. The RRC evaluation script that produces
the leaderboard numbers pins the details the formula leaves open (docs/metric-facts.md §2), and this reference
follows them:
- the distance is taken between the strings after trimming, lowercasing and collapsing whitespace runs;
- the length it is divided by is the longer of the two ORIGINAL strings, measured after upper-casing
  (padding counts, and a character such as "ß" that upper-cases to two counts two); 0 / 0 counts as NL 0;
- a similarity below tau is zeroed, so a similarity of exactly 0.5 is kept (the papers' "NL < tau" would
  zero it).

It shares no code with metrics/anls.py: the edit distance is a textbook dynamic programme, not a library.
"""

from __future__ import annotations

from collections.abc import Sequence

TAU = 0.5


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute, each costing 1), over code points."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            substitute = table[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, substitute)
    return table[len(a)][len(b)]


def canonical(text: str) -> str:
    """Lowercase, trimmed, with every whitespace run turned into one space."""
    return " ".join(text.lower().split())


def similarity(answer: str, prediction: str) -> float:
    """1 - NL for one answer (before the threshold)."""
    longest = max(len(answer.upper()), len(prediction.upper()))
    if longest == 0:
        return 1.0
    return 1.0 - edit_distance(canonical(answer), canonical(prediction)) / longest


def question_anls(prediction: str, answers: Sequence[str], tau: float = TAU) -> float:
    """Best similarity over the answers, or 0 when it falls below tau."""
    if len(answers) == 0:
        raise ValueError("an ANLS question needs at least one answer")
    best = max(similarity(answer, prediction) for answer in answers)
    return best if best >= tau else 0.0


def dataset_anls(predictions: Sequence[str], answers: Sequence[Sequence[str]], tau: float = TAU) -> float:
    """Mean of the per-question scores."""
    scores = [question_anls(p, a, tau) for p, a in zip(predictions, answers, strict=True)]
    return sum(scores) / len(scores)
