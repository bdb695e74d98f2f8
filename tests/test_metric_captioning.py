"""metrics/captioning.py against pycocoevalcap's own scorers called directly, plus hand-computed cases."""

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from metrics import captioning
from metrics.captioning import caption_scores, score_captions, tokenize

REFERENCES = {
    391895: ["A man with a red helmet on a small moped on a dirt road.",
             "Man riding a motor bike on a dirt road on the countryside.",
             "A man riding on the back of a motorcycle.",
             "A dirt path with a young person on a motor bike rests to the foreground.",
             "A man in a red shirt and a red hat is on a motorcycle on a hill side."],
    "522418": ["A woman wearing a net on her head cutting a cake.",
               "A woman cutting a large white sheet cake.",
               "A woman wearing a hair net cuts a large sheet cake."],
    184613: ["A child holding a flowered umbrella and petting a yak.",
             "A young man holding an umbrella next to a herd of cattle."],
    7: ["Two dogs -- playing (in the snow)!", "dogs play in snow"],
}
PREDICTIONS = {391895: "A man riding a red motorcycle on a dirt road.",
               "522418": "a woman cutting a cake",
               184613: "A BOY holding an umbrella, next to cattle...",
               7: "two dogs in the snow"}


def _reference_scores(predictions, references):
    """What big_vision's coco_caption evaluator does: PTB-tokenize both sides, then each scorer."""
    gts = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = PTBTokenizer().tokenize({k: [{"caption": predictions.get(k, "")}] for k in references})
    cider, cider_per = Cider().compute_score(gts, res)
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    return ({"cider": cider, "bleu4": bleu[3], "rouge_l": rouge},
            {"cider": list(cider_per), "bleu4": bleu_per[3], "rouge_l": list(rouge_per)})


def test_equals_pycocoevalcap_number_for_number():
    ours = caption_scores(PREDICTIONS, REFERENCES, ("cider", "bleu4", "rouge_l"))
    corpus, per = _reference_scores(PREDICTIONS, REFERENCES)
    assert ours.corpus == corpus
    for name, values in per.items():
        assert [ours.per_example[k][name] for k in REFERENCES] == values


def test_meteor_equals_pycocoevalcap():
    gts = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = PTBTokenizer().tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    # pycocoevalcap's Meteor, called directly; the JVM (7 s to start) is the one the module keeps.
    meteor = captioning._meteor_process()
    assert isinstance(meteor, Meteor)
    expected, expected_per = meteor.compute_score(gts, res)
    ours = caption_scores(PREDICTIONS, REFERENCES, ("meteor",))
    assert ours.corpus == {"meteor": expected}
    assert [ours.per_example[k]["meteor"] for k in REFERENCES] == expected_per
    assert 0 < expected < 1


def test_tokenize_once_equals_two_separate_ptb_calls():
    gts, res = tokenize(PREDICTIONS, REFERENCES)
    assert gts == PTBTokenizer().tokenize(
        {k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    assert res == PTBTokenizer().tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    assert res[184613] == ["a boy holding an umbrella next to cattle"]  # lowercased, no punctuation


def test_perfect_captions():
    refs = {1: ["a red circle above a blue square"], 2: ["two green triangles on white"],
            3: ["one small yellow star in the corner"]}
    scores = score_captions({k: v[0] for k, v in refs.items()}, refs, ("cider", "bleu4", "rouge_l"))
    # Every n-gram occurs in one image only, so each tf-idf vector equals its reference: 10 x 1.
    assert scores["cider"] == pytest.approx(10.0)
    assert scores["bleu4"] == pytest.approx(1.0)
    assert scores["rouge_l"] == 1.0


def test_damaged_caption_by_hand():
    refs = {1: ["a red circle above a blue square"]}
    scores = score_captions({1: "a red circle above a square"}, refs, ("bleu4", "rouge_l"))
    # ROUGE-L: LCS 6 of 6 candidate and 7 reference tokens, beta 1.2.
    p, r, b2 = 1.0, 6 / 7, 1.2 ** 2
    assert scores["rouge_l"] == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    # BLEU-4: n-gram precisions 6/6, 4/5 ("a square" is new), 3/4, 2/3; brevity penalty e^(1-7/6).
    assert scores["bleu4"] == pytest.approx(math.exp(1 - 7 / 6) * (1 * 0.8 * 0.75 * (2 / 3)) ** 0.25)


def test_missing_prediction_is_an_empty_caption():
    partial = {k: v for k, v in PREDICTIONS.items() if k != 7}
    metrics = ("cider", "bleu4", "rouge_l")
    assert caption_scores(partial, REFERENCES, metrics) == \
        caption_scores({**partial, 7: ""}, REFERENCES, metrics)
    assert caption_scores(partial, REFERENCES, metrics).per_example[7]["rouge_l"] == 0.0


def test_line_breaks_inside_captions_do_not_shift_later_captions():
    # Java's tokenizer breaks lines at \r and U+2028 too; unguarded, every later caption moves.
    broken = {**PREDICTIONS, 391895: "A man riding\ra red motorcycle\u2028on a dirt road."}
    metrics = ("cider", "rouge_l")
    assert caption_scores(broken, REFERENCES, metrics) == \
        caption_scores(PREDICTIONS, REFERENCES, metrics)


def test_parallel_calls_agree():
    metrics = ("cider", "bleu4")
    expected = score_captions(PREDICTIONS, REFERENCES, metrics)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: score_captions(PREDICTIONS, REFERENCES, metrics), range(4)))
    assert results == [expected] * 4


def test_spice_is_skipped_with_one_line_when_its_models_are_absent(monkeypatch, caplog):
    monkeypatch.setattr(captioning, "spice_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="metrics.captioning"):
        scores = score_captions(PREDICTIONS, REFERENCES, ("cider", "spice"))
    assert set(scores) == {"cider"}
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "SPICE skipped" in caplog.text


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown caption metric"):
        score_captions(PREDICTIONS, REFERENCES, ("cider", "bleu"))
    with pytest.raises(ValueError, match="have no reference"):
        score_captions({**PREDICTIONS, 99: "x"}, REFERENCES, ("cider",))
    with pytest.raises(ValueError, match="non-empty list"):
        score_captions({}, {1: []}, ("cider",))
    with pytest.raises(TypeError, match=r"predictions\[7\]"):
        score_captions({**PREDICTIONS, 7: None}, REFERENCES, ("cider",))
