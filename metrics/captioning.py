"""Caption metrics (CIDEr, BLEU-4, METEOR, ROUGE-L, SPICE) computed by pycocoevalcap itself.

As big_vision's `coco_caption` evaluator and the COCO server do (docs/metric-facts.md §3): predictions and
references both go through pycocoevalcap's PTB tokenizer (lowercase, punctuation dropped), and the
tokenized text feeds every scorer. Tokenization runs once, in one JVM call for both sides. CIDEr's
document frequencies come from the references of the set being scored (pycocoevalcap's own
behaviour), so a corpus score depends on which examples are scored together.

Values are what pycocoevalcap returns: fractions in [0, 1], CIDEr on its own scale (tables x100).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ALL_METRICS: tuple[str, ...] = ("cider", "bleu4", "meteor", "rouge_l", "spice")
DEFAULT_METRICS: tuple[str, ...] = ("cider", "bleu4", "meteor", "rouge_l")

# pycocoevalcap replaces only "\n" before its line-per-caption JVM call, but Java also breaks lines
# at these, which would silently shift every later caption onto the wrong example.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class CaptionScores:
    """Corpus scores and, per example id, that example's score under each metric."""

    corpus: dict[str, float]
    per_example: dict[Hashable, dict[str, float]]


def score_captions(predictions: Mapping[Hashable, str],
                   references: Mapping[Hashable, Sequence[str]],
                   metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Corpus scores keyed `cider`, `bleu4`, `meteor`, `rouge_l` (and `spice` when available).

    Every id of `references` is scored; an id with no prediction is scored as an empty caption.
    """
    return caption_scores(predictions, references, metrics).corpus


def caption_scores(predictions: Mapping[Hashable, str],
                   references: Mapping[Hashable, Sequence[str]],
                   metrics: Iterable[str] = DEFAULT_METRICS) -> CaptionScores:
    """`score_captions` plus per-example scores (sentence BLEU-4, CIDEr, ROUGE-L, METEOR, SPICE)."""
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; known: {list(ALL_METRICS)}")
    if "spice" in metrics and not spice_available():
        log.warning("SPICE skipped: its Stanford CoreNLP 3.6.0 models are not in %s (never "
                    "downloaded here)", _spice_lib_dir())
        metrics = tuple(m for m in metrics if m != "spice")
    if not references:
        raise ValueError("no references to score")
    gts, res = tokenize(predictions, references)
    ids = list(gts)
    corpus: dict[str, float] = {}
    per_example: dict[Hashable, dict[str, float]] = {i: {} for i in ids}
    for name in metrics:
        total, per = _SCORERS[name](gts, res)
        corpus[name] = float(total)
        for i, value in zip(ids, per):
            per_example[i][name] = float(value)
    return CaptionScores(corpus, per_example)


def tokenize(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
             ) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """PTB-tokenized (references, predictions) in pycocoevalcap's layout: id -> list of strings."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    extra = [k for k in predictions if k not in references]
    if extra:
        raise ValueError(f"{len(extra)} prediction id(s) have no reference, e.g. {extra[:3]}")
    joint: dict[tuple[str, Hashable], list[dict[str, str]]] = {}
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings, got {refs!r}")
        joint["ref", key] = [{"caption": _one_line(r, f"references[{key!r}]")} for r in refs]
    for key in references:
        pred = predictions.get(key, "")
        joint["pred", key] = [{"caption": _one_line(pred, f"predictions[{key!r}]")}]
    _check_java(Path(ptbtokenizer.__file__).parent)
    tokens = ptbtokenizer.PTBTokenizer().tokenize(joint)
    for key, captions in joint.items():
        if len(tokens.get(key, ())) != len(captions):
            raise RuntimeError(f"PTB tokenizer returned {len(tokens.get(key, ()))} lines for "
                               f"{key}, expected {len(captions)}: captions out of step")
    gts = {key: tokens["ref", key] for key in references}
    res = {key: tokens["pred", key] for key in references}
    return gts, res


def spice_available() -> bool:
    """SPICE needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap would download on first use."""
    lib = _spice_lib_dir()
    return all((lib / f"stanford-corenlp-3.6.0{s}.jar").is_file() for s in ("", "-models"))


def _spice_lib_dir() -> Path:
    import pycocoevalcap.spice as spice

    return Path(spice.__file__).parent / "lib"


def _one_line(caption: object, where: str) -> str:
    if not isinstance(caption, str):
        raise TypeError(f"{where}: expected a string caption, got {type(caption).__name__}")
    return _LINE_BREAKS.sub(" ", caption)


def _check_java(tokenizer_dir: Path) -> None:
    if shutil.which("java") is None:
        raise RuntimeError("pycocoevalcap's PTB tokenizer and METEOR need a Java runtime: "
                           "no `java` on PATH")
    # The tokenizer writes its input to a uniquely named temp file inside its own package folder
    # (safe across threads and processes, but the folder must be writable).
    if not os.access(tokenizer_dir, os.W_OK):
        raise RuntimeError(f"pycocoevalcap's PTB tokenizer writes a temp file into {tokenizer_dir}, "
                           "which is not writable")


# --- scorers: each returns (corpus score, per-example scores in the order of gts) ----------------

def _cider(gts, res):
    from pycocoevalcap.cider.cider import Cider

    return Cider().compute_score(gts, res)


def _bleu4(gts, res):
    from pycocoevalcap.bleu.bleu import Bleu

    total, per = Bleu(4).compute_score(gts, res, verbose=0)
    return total[3], per[3]


def _rouge_l(gts, res):
    from pycocoevalcap.rouge.rouge import Rouge

    return Rouge().compute_score(gts, res)


def _meteor(gts, res):
    return _meteor_process().compute_score(gts, res)


def _spice(gts, res):
    from pycocoevalcap.spice.spice import Spice

    total, per = Spice().compute_score(gts, res)
    return total, [p["All"]["f"] for p in per]


@functools.lru_cache(maxsize=1)
def _meteor_process():
    """One METEOR 1.5 JVM per process: its start (paraphrase table) takes ~7 s, scoring is fast.

    pycocoevalcap's Meteor serialises calls with a lock, so sharing it across threads is safe.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    atexit.register(meteor.meteor_p.kill)
    return meteor


_SCORERS = {"cider": _cider, "bleu4": _bleu4, "meteor": _meteor, "rouge_l": _rouge_l,
            "spice": _spice}
