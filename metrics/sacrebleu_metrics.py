"""Corpus BLEU and chrF by sacrebleu: extra (never headline) text-generation metrics beside pycocoevalcap's.

Why both: pycocoevalcap's BLEU-4 (metrics/captioning.py) is what the COCO server and big_vision report, on
PTB-tokenized lowercase text with its own brevity handling; sacrebleu's is the reproducible, signature-
stamped BLEU the MT field reports. They differ on purpose:

- Input: the raw (detokenized) prediction and reference strings; sacrebleu tokenizes them itself with its
  default `13a` tokenizer (mteval-v13a: punctuation split off, case kept). BLEU is sacrebleu's default:
  4-gram, smoothing `exp`, corpus-level brevity penalty over the closest reference lengths. chrF is chrF2
  (character 6-grams, beta 2, no word n-grams), which needs no tokenizer.
- References: every reference of an example (COCO has about five); examples with fewer references than
  the most any example has are padded with None, which sacrebleu drops. Not with "": sacrebleu keeps an
  empty string as a reference of length 0 (its command line reads empty lines so), and a short prediction
  then takes that length for the brevity penalty (tests/test_metric_sacrebleu.py shows the difference).

The signatures sacrebleu writes (returned beside the scores; the tasks keep them in Scores.extra) say exactly
this, e.g. `nrefs:5|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`. Values are fractions like every metric
here (sacrebleu's 0-100 score / 100), keyed `sacrebleu_bleu` and `sacrebleu_chrf`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

METRICS = ("sacrebleu_bleu", "sacrebleu_chrf")


def _metrics():
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(tokenize="13a"), CHRF()


def reference_streams(references: Mapping[Hashable, Sequence[str]], ids: Sequence[Hashable]
                      ) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference position, None where an example has fewer."""
    depth = max(len(references[i]) for i in ids)
    return [[references[i][k] if k < len(references[i]) else None for i in ids] for k in range(depth)]


def sacrebleu_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
                     ) -> tuple[dict[str, float], dict[str, str]]:
    """(corpus BLEU and chrF of every id of `references`, sacrebleu's signature of each); a missing
    prediction counts as empty text."""
    if not references:
        raise ValueError("no references to score")
    ids = list(references)
    for i in ids:
        if isinstance(references[i], str) or not references[i]:
            raise ValueError(f"references[{i!r}] must be a non-empty list of strings, got {references[i]!r}")
    hypotheses = [predictions.get(i, "") or "" for i in ids]
    streams = reference_streams(references, ids)
    bleu, chrf = _metrics()
    scores = {"sacrebleu_bleu": bleu.corpus_score(hypotheses, streams).score / 100.0,
              "sacrebleu_chrf": chrf.corpus_score(hypotheses, streams).score / 100.0}
    return scores, {"sacrebleu_bleu": str(bleu.get_signature()), "sacrebleu_chrf": str(chrf.get_signature())}
