"""RadGraph rewards (the radgraph 0.1.18 package's definitions) on hand-written annotations, values
computed by hand; the lexicon annotator; the model annotator's refusal to download."""

import pytest

from metrics import radgraph
from metrics.radgraph import (
    ABSENT,
    ANATOMY,
    PRESENT,
    UNCERTAIN,
    LexiconAnnotator,
    RadGraphUnavailable,
    annotate_with_lexicon,
    radgraph_scores,
    reward_items,
    rewards,
)


def ann(*entities):
    """Entities given as (tokens, label, [(relation, target index 1-based)])."""
    return {"entities": {str(i): {"tokens": t, "label": lab, "relations": [[k, str(j)] for k, j in rel]}
                         for i, (t, lab, rel) in enumerate(entities, 1)}}


# The reference: "small left pleural effusion ... cardiomegaly".
REF = ann(("effusion", PRESENT, [("located_at", 2)]), ("pleural", ANATOMY, []),
          ("cardiomegaly", PRESENT, []))


def values(h, r):
    return tuple(rewards(h, r)[f"radgraph_{level}"] for level in ("simple", "partial", "complete"))


def test_identical_annotations_score_one():
    assert values(REF, REF) == (1.0, 1.0, 1.0)


def test_missing_relation_counts_in_partial_and_complete_only():
    hyp = ann(("effusion", PRESENT, []), ("pleural", ANATOMY, []), ("cardiomegaly", PRESENT, []))
    # simple: same 3 items. partial: (effusion, DP) vs (effusion, DP, True): 2 of 3 on each side.
    # complete: (effusion, DP) vs (effusion, DP, located_at, pleural): 2 of 3.
    assert values(hyp, REF) == pytest.approx((1.0, 2 / 3, 2 / 3))


def test_wrong_relation_target_counts_in_complete_only():
    hyp = ann(("effusion", PRESENT, [("located_at", 3)]), ("pleural", ANATOMY, []),
              ("cardiomegaly", PRESENT, []))
    assert values(hyp, REF) == pytest.approx((1.0, 1.0, 2 / 3))


def test_label_and_extra_entity():
    hyp = ann(("effusion", PRESENT, [("located_at", 2)]), ("pleural", ANATOMY, []),
              ("cardiomegaly", ABSENT, []), ("edema", PRESENT, []))
    # 2 of 4 hypothesis items match, 2 of 3 reference items: P 1/2, R 2/3, F1 4/7 at every level.
    assert values(hyp, REF) == pytest.approx((4 / 7, 4 / 7, 4 / 7))


def test_case_sensitive_except_relation_items_of_complete():
    hyp = ann(("Effusion", PRESENT, [("located_at", 2)]), ("PLEURAL", ANATOMY, []),
              ("cardiomegaly", PRESENT, []))
    # simple / partial: only cardiomegaly matches (1/3 each side). complete: the relation item is
    # lowercased and matches, PLEURAL (no relation, case kept) does not: 2/3.
    assert values(hyp, REF) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    assert ("effusion", PRESENT, "located_at", "pleural") in reward_items(hyp, "complete")


def test_complete_has_one_item_per_relation_and_sets_drop_duplicates():
    hyp = ann(("opacity", PRESENT, [("located_at", 2), ("suggestive_of", 3)]),
              ("lobe", ANATOMY, []), ("pneumonia", UNCERTAIN, []), ("lobe", ANATOMY, []))
    assert reward_items(hyp, "complete") == {
        ("opacity", PRESENT, "located_at", "lobe"), ("opacity", PRESENT, "suggestive_of", "pneumonia"),
        ("lobe", ANATOMY), ("pneumonia", UNCERTAIN)}
    assert reward_items(hyp, "simple") == {("opacity", PRESENT), ("lobe", ANATOMY),
                                           ("pneumonia", UNCERTAIN)}


def test_zero_rules():
    empty = {"entities": {}}
    assert values(empty, REF) == (0.0, 0.0, 0.0)
    assert values(REF, empty) == (0.0, 0.0, 0.0)
    assert values(empty, empty) == (0.0, 0.0, 0.0)  # both empty: still 0, as the package does
    disjoint = ann(("edema", PRESENT, []))
    assert values(disjoint, REF) == (0.0, 0.0, 0.0)


class Spy:
    """An annotator that looks annotations up by text and records what it was asked."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return [self.table[t] for t in texts]


def test_corpus_mean_includes_zeros_and_empty_reports_are_not_annotated():
    spy = Spy({"ref a": REF, "hyp a": REF, "ref b": REF,
               "hyp c": ann(("effusion", PRESENT, [])), "ref c": REF})
    scores = radgraph_scores({"a": "hyp a", "b": "  ", "c": "hyp c"},
                             {"a": "ref a", "b": "ref b", "c": "ref c", "d": "ref b"}, spy)
    assert spy.calls == [["hyp a", "hyp c", "ref a", "ref c"]]  # b (blank) and d (missing) skipped
    # c: simple {(effusion, DP)} vs 3 items: P 1, R 1/3, F1 1/2; partial and complete: 0.
    assert scores.per_example["c"] == pytest.approx(
        {"radgraph_simple": 0.5, "radgraph_partial": 0.0, "radgraph_complete": 0.0})
    assert scores.per_example["b"] == scores.per_example["d"] == dict.fromkeys(
        ("radgraph_simple", "radgraph_partial", "radgraph_complete"), 0.0)
    assert scores.corpus == pytest.approx(
        {"radgraph_simple": 1.5 / 4, "radgraph_partial": 1 / 4, "radgraph_complete": 1 / 4})


def test_malformed_annotations_are_named():
    with pytest.raises(ValueError, match="'entities'"):
        rewards({"text": "x"}, REF)
    with pytest.raises(ValueError, match="lacks field"):
        rewards({"entities": {"1": {"tokens": "x", "label": PRESENT}}}, REF)
    with pytest.raises(ValueError, match="relation"):
        rewards(ann(("x", PRESENT, [("modify", 5)])), REF)


def test_lexicon_annotator_labels_and_relations():
    a = annotate_with_lexicon("There is a focal opacity in the right lower lobe concerning for "
                              "pneumonia. No pleural effusion or pneumothorax. The heart is mildly "
                              "enlarged.")
    got = [(e["tokens"], e["label"], e["relations"]) for e in a["entities"].values()]
    assert got == [
        ("focal", PRESENT, [["modify", "2"]]),
        ("opacity", PRESENT, [["located_at", "3"], ["suggestive_of", "4"]]),
        ("right lower lobe", ANATOMY, []),
        ("pneumonia", UNCERTAIN, [["located_at", "3"]]),
        ("pleural", ANATOMY, []),
        ("effusion", ABSENT, [["located_at", "5"]]),
        ("pneumothorax", ABSENT, [["located_at", "5"]]),
        ("heart", ANATOMY, []),
        ("mildly", PRESENT, [["modify", "10"]]),
        ("enlarged", PRESENT, [["located_at", "8"]]),
    ]


def test_lexicon_negation_stops_at_the_clause_and_keeps_case():
    a = annotate_with_lexicon("Small left pleural effusion, but no pneumothorax.")
    got = [(e["tokens"], e["label"], e["relations"]) for e in a["entities"].values()]
    assert got == [("Small", PRESENT, [["modify", "3"]]), ("left pleural", ANATOMY, []),
                   ("effusion", PRESENT, [["located_at", "2"]]), ("pneumothorax", ABSENT, [])]
    assert LexiconAnnotator()(["No acute cardiopulmonary process.", ""]) == [
        annotate_with_lexicon("No acute cardiopulmonary process."), {"text": "", "entities": {}}]


def test_model_annotator_never_downloads(tmp_path):
    with pytest.raises(RadGraphUnavailable, match="never downloads"):
        radgraph.check_radgraph_model("radgraph", model_cache_dir=tmp_path)
    assert not radgraph.radgraph_model_available("radgraph", model_cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing fetched
    with pytest.raises(RadGraphUnavailable):
        radgraph.RadGraphModelAnnotator("radgraph", model_cache_dir=tmp_path)
