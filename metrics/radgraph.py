"""RadGraph F1 between generated and reference radiology reports (PaliGemma 2 Table 8).

The paper names "RadGraph F1" [Jain et al. 2021] without the implementation or reward level
(docs/metric-facts.md §6). We follow the `radgraph` PyPI package 0.1.18 (`F1RadGraph`, rewards.py),
re-implemented from its definitions, and report its three reward levels:

- `radgraph_simple`   (RG_E):  items (entity tokens, label);
- `radgraph_partial`  (RG_ER): (tokens, label) for entities without relations, (tokens, label, True)
  for entities with at least one;
- `radgraph_complete` (RG_ER-bar): (tokens, label) for entities without relations, and for each
  relation of an entity (tokens.lower(), label, relation type, target tokens.lower()).

Each level is the F1 of the hypothesis item set against the reference item set (P or R is 0 when its
set is empty). Tokens are compared case-sensitively except in the relation items of `complete`. A
report pair scores 0 at every level when either report is empty (not annotated) or either
annotation has no entities, even when both have none. The corpus score is the plain mean over
reports, zeros included. The headline is `radgraph_partial`: the radgraph README says RG_ER "has
been reported widely", and the paper does not say which level it used.

Annotations are the package's dicts, {"entities": {id: {"tokens", "label", "relations":
[[type, target_id], ...]}}}. Who annotates is pluggable: `RadGraphModelAnnotator` runs the package's
model from weights already on disk (the package itself would download them; we never do), and
`LexiconAnnotator` is a small deterministic rule-based annotator for synthetic (demo) reports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Annotation = Mapping[str, Any]
# An annotator maps report texts to one annotation dict each, in order.
Annotator = Callable[[Sequence[str]], Sequence[Annotation]]

REWARD_LEVELS: tuple[str, ...] = ("simple", "partial", "complete")
HEADLINE = "radgraph_partial"


@dataclass(frozen=True)
class RadGraphScores:
    """Corpus means keyed `radgraph_<level>`, and each example's rewards under the same keys."""

    corpus: dict[str, float]
    per_example: dict[Hashable, dict[str, float]]


# --- rewards on annotations --------------------------------------------------------------------

def reward_items(annotation: Annotation, level: str) -> set[tuple]:
    """The set of items a report contributes at one reward level (see the module docstring)."""
    entities = _entities(annotation)
    items: set[tuple] = set()
    for entity in entities.values():
        tokens, label, relations = entity["tokens"], entity["label"], entity["relations"]
        if level == "simple" or not relations:
            items.add((tokens, label))
        elif level == "partial":
            items.add((tokens, label, True))
        elif level == "complete":
            items.update((tokens.lower(), label, kind, entities[target]["tokens"].lower())
                         for kind, target in relations)
        else:
            raise ValueError(f"unknown RadGraph reward level {level!r}; known: {REWARD_LEVELS}")
    return items


def rewards(hypothesis: Annotation, reference: Annotation) -> dict[str, float]:
    """F1 of hypothesis vs reference items at each level, keyed `radgraph_<level>`."""
    if not _entities(hypothesis) or not _entities(reference):
        return {f"radgraph_{level}": 0.0 for level in REWARD_LEVELS}
    return {f"radgraph_{level}": _f1(reward_items(hypothesis, level), reward_items(reference, level))
            for level in REWARD_LEVELS}


def _f1(hyp: set, ref: set) -> float:
    hits = len(hyp & ref)
    precision = hits / len(hyp) if hyp else 0.0
    recall = hits / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _entities(annotation: Annotation) -> Mapping[str, Mapping[str, Any]]:
    try:
        entities = annotation["entities"]
    except (KeyError, TypeError):
        raise ValueError(f"a RadGraph annotation needs an 'entities' dict, got {annotation!r}") from None
    for key, entity in entities.items():
        missing = [f for f in ("tokens", "label", "relations") if f not in entity]
        if missing:
            raise ValueError(f"RadGraph entity {key!r} lacks field(s) {missing}: {entity!r}")
        for relation in entity["relations"]:
            if len(relation) != 2 or relation[1] not in entities:
                raise ValueError(f"RadGraph entity {key!r}: relation {relation!r} must be "
                                 "[type, id of an entity of the same report]")
    return entities


# --- corpus scoring ----------------------------------------------------------------------------

def radgraph_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, str],
                    annotator: Annotator) -> RadGraphScores:
    """Annotate both sides with `annotator` and average the per-report rewards over `references`.

    An id with no prediction is scored as an empty report (0). Empty or blank reports are not
    annotated (the package skips empty strings; a blank one would have no entities anyway).
    """
    extra = [k for k in predictions if k not in references]
    if extra:
        raise ValueError(f"{len(extra)} prediction id(s) have no reference, e.g. {extra[:3]}")
    if not references:
        raise ValueError("no references to score")
    pairs = {k: (predictions.get(k, ""), references[k]) for k in references}
    for k, (hyp, ref) in pairs.items():
        if not isinstance(hyp, str) or not isinstance(ref, str):
            raise TypeError(f"report {k!r}: expected strings, got {type(hyp).__name__} (prediction) "
                            f"and {type(ref).__name__} (reference)")
    scored = [k for k, (hyp, ref) in pairs.items() if hyp.strip() and ref.strip()]
    texts = [pairs[k][0] for k in scored] + [pairs[k][1] for k in scored]
    annotations = list(annotator(texts)) if texts else []
    if len(annotations) != len(texts):
        raise RuntimeError(f"annotator returned {len(annotations)} annotations for {len(texts)} texts")
    zero = {f"radgraph_{level}": 0.0 for level in REWARD_LEVELS}
    per_example = {k: dict(zero) for k in pairs}
    for i, k in enumerate(scored):
        per_example[k] = rewards(annotations[i], annotations[i + len(scored)])
    corpus = {key: sum(r[key] for r in per_example.values()) / len(per_example) for key in zero}
    return RadGraphScores(corpus, per_example)


def score_radgraph(predictions: Mapping[Hashable, str], references: Mapping[Hashable, str],
                   annotator: Annotator) -> dict[str, float]:
    """Corpus `radgraph_simple`, `radgraph_partial` (headline) and `radgraph_complete`."""
    return radgraph_scores(predictions, references, annotator).corpus


# --- annotator 1: the radgraph package's model, from local weights only ------------------------

# PaliGemma 2 cites RadGraph v1 (Jain et al. 2021, ref [30]), i.e. model_type "radgraph"; the
# package's own default is "radgraph-xl".
DEFAULT_MODEL_TYPE = "radgraph"
_MODEL_FILES = ("config.json", "weights.th")


class RadGraphUnavailable(RuntimeError):
    """The radgraph package or its model weights are not on this machine."""


def radgraph_model_dir(model_type: str = DEFAULT_MODEL_TYPE,
                       model_cache_dir: str | Path | None = None) -> Path:
    """Where `radgraph.RadGraph` keeps (and would download) the model: <cache>/<model_type>."""
    if model_cache_dir is None:
        if importlib.util.find_spec("radgraph") is None:
            raise RadGraphUnavailable(
                "the `radgraph` package is not installed (pip install radgraph==0.1.18; it is an "
                "optional dependency, needed only to annotate real reports)")
        from importlib.metadata import version

        from appdirs import user_cache_dir  # a dependency of radgraph

        model_cache_dir = Path(user_cache_dir("radgraph")) / version("radgraph")
    return Path(model_cache_dir) / model_type


def check_radgraph_model(model_type: str = DEFAULT_MODEL_TYPE,
                         model_cache_dir: str | Path | None = None) -> Path:
    """The model folder, or RadGraphUnavailable saying what is missing and how to get it."""
    folder = radgraph_model_dir(model_type, model_cache_dir)
    missing = [f for f in _MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise RadGraphUnavailable(
            f"RadGraph model {model_type!r}: {', '.join(missing)} not found in {folder}. The "
            f"radgraph package downloads {model_type}.tar.gz from the Hugging Face Hub repo "
            "StanfordAIMI/RRG_scorers into that folder (extracted); this harness never downloads. "
            "Fetch it on a machine with hub access (python -c \"from radgraph import RadGraph; "
            f"RadGraph(model_type='{model_type}')\") and copy the folder here, together with the "
            "Hugging Face cache of the BERT encoder its config.json names.")
    encoder = _encoder_name(folder)
    if encoder and not _in_hf_cache(encoder):
        raise RadGraphUnavailable(
            f"RadGraph model {model_type!r} needs the encoder {encoder!r}, which is not in the local "
            "Hugging Face cache; this harness never downloads. Copy that cache entry here.")
    if importlib.util.find_spec("radgraph") is None:
        raise RadGraphUnavailable("the `radgraph` package is not installed (pip install "
                                  "radgraph==0.1.18)")
    return folder


def radgraph_model_available(model_type: str = DEFAULT_MODEL_TYPE,
                             model_cache_dir: str | Path | None = None) -> bool:
    try:
        check_radgraph_model(model_type, model_cache_dir)
    except RadGraphUnavailable:
        return False
    return True


def _encoder_name(folder: Path) -> str | None:
    import json

    config = json.loads((folder / "config.json").read_text())
    try:
        return config["dataset_reader"]["token_indexers"]["bert"]["model_name"]
    except (KeyError, TypeError):
        return None


def _in_hf_cache(repo_id: str) -> bool:
    if Path(repo_id).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


@contextlib.contextmanager
def _hub_offline():
    """Hub requests raise while the model loads (huggingface_hub checks this flag per request), so
    a file missing from the local cache is an error, not a download."""
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


class RadGraphModelAnnotator:
    """Annotates with the `radgraph` package's DyGIE++ model (imported lazily: torch, transformers).

    Construction fails with RadGraphUnavailable, before importing anything heavy, when the package
    or the weights are missing. Reports are passed as they are (the package does not lowercase).
    """

    def __init__(self, model_type: str = DEFAULT_MODEL_TYPE,
                 model_cache_dir: str | Path | None = None, batch_size: int = 1):
        folder = check_radgraph_model(model_type, model_cache_dir)
        from importlib.metadata import version

        from radgraph import RadGraph

        self.description = f"radgraph {version('radgraph')} model {model_type!r}"
        with _hub_offline():
            self._model = RadGraph(model_type=model_type, model_cache_dir=str(folder.parent),
                                   batch_size=batch_size)

    def __call__(self, texts: Sequence[str]) -> list[Annotation]:
        out = self._model(list(texts))
        # The package drops a report whose post-processing fails; that report has no entities.
        return [out.get(str(i), {"entities": {}}) for i in range(len(texts))]


# --- annotator 2: a lexicon of anatomy / observation terms, for synthetic reports --------------

ANATOMY = "Anatomy::definitely present"
PRESENT = "Observation::definitely present"
ABSENT = "Observation::definitely absent"
UNCERTAIN = "Observation::uncertain"

# Term -> kind. "modifier" terms are observations that `modify` the next observation of their
# clause (RadGraph labels "small" in "small effusion" an observation too). Longest match wins, so
# "right lower lobe" is one anatomy entity and "right pleural" keeps the side in the entity.
_TERMS = {
    "anatomy": """lung, lungs, right lung, left lung, lung bases, lung volumes, bases, apex, apices,
        right upper lobe, right middle lobe, right lower lobe, left upper lobe, left lower lobe,
        upper lobe, lower lobe, lingula, pleural, pleural space, right pleural, left pleural,
        bilateral pleural, right apical, left apical, apical, heart, cardiac, cardiac silhouette,
        cardiomediastinal silhouette, mediastinal, mediastinum, hilar, hila, costophrenic angle,
        costophrenic angles, right costophrenic angle, left costophrenic angle, hemidiaphragm,
        hemidiaphragms, osseous structures, cardiopulmonary, pulmonary vasculature, chest""",
    "observation": """opacity, opacities, consolidation, consolidations, effusion, effusions,
        pneumothorax, cardiomegaly, enlarged, enlargement, edema, pneumonia, atelectasis,
        infection, clear, normal, unremarkable, abnormality, abnormalities, process""",
    "modifier": """small, moderate, large, mild, mildly, moderately, focal, patchy, acute, trace,
        severe, new, minimal""",
}
_LEXICON: dict[tuple[str, ...], str] = {
    tuple(term.split()): kind for kind, terms in _TERMS.items() for term in terms.split(",")}
_LONGEST = max(len(k) for k in _LEXICON)
_NEGATION = frozenset("no not without negative free".split())
_UNCERTAINTY = frozenset("""possible possibly may might could likely probable suspected questionable
    concerning suspicious worrisome suggestive""".split())
_SENTENCE_END = frozenset(".!?")
_CLAUSE_END = _SENTENCE_END | frozenset([";", "but", "however", "although", "though", "except"])
# "<observation> <cue> <observation>": the first is suggestive_of the second.
_SUGGESTIVE = tuple(tuple(c.split()) for c in (
    "concerning for", "suspicious for", "suggestive of", "worrisome for", "consistent with",
    "compatible with", "may represent", "could represent", "likely representing"))
_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


class LexiconAnnotator:
    """Deterministic RadGraph-style annotations from a lexicon and a few patterns.

    Made for the demo's templated reports, whose vocabulary the lexicon covers; it is not a
    substitute for the RadGraph model on real reports. Entities are lexicon terms (tokens as written,
    so matching stays case-sensitive, as with the model). Observation labels follow the latest
    negation or uncertainty cue before them in their clause. Relations: a modifier `modify`s the
    next observation of its clause; an observation is `located_at` the nearest anatomy entity of
    its clause (ties go to the one before it); "<obs> concerning for <obs>" and similar cues
    give `suggestive_of`.
    """

    description = "lexicon (demo reports only)"

    def __call__(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return [annotate_with_lexicon(t) for t in texts]


def annotate_with_lexicon(text: str) -> dict[str, Any]:
    """One report -> {"text", "entities"} in the radgraph package's layout."""
    tokens = _TOKEN.findall(text)
    lower = [t.lower() for t in tokens]
    sentence, clause = _segments(lower)
    spans = _match_terms(lower)
    entities: dict[str, dict[str, Any]] = {}
    for n, (start, end, kind) in enumerate(spans, 1):
        label = ANATOMY if kind == "anatomy" else _cue_label(lower, clause, start)
        entities[str(n)] = {"tokens": " ".join(tokens[start:end]), "label": label,
                            "start_ix": start, "end_ix": end - 1, "relations": []}
    ids = {start: str(n) for n, (start, _, _) in enumerate(spans, 1)}
    observations = [s for s in spans if s[2] == "observation"]
    anatomy = [s for s in spans if s[2] == "anatomy"]
    for start, end, kind in spans:
        relations = entities[ids[start]]["relations"]
        if kind == "modifier":
            target = next((o for o in observations if o[0] >= end and clause[o[0]] == clause[start]),
                          None)
            if target:
                relations.append(["modify", ids[target[0]]])
        elif kind == "observation":
            near = [a for a in anatomy if clause[a[0]] == clause[start]]
            if near:
                best = min(near, key=lambda a: (_gap(a, (start, end)), a[0] > start))
                relations.append(["located_at", ids[best[0]]])
    for at, width in _find_phrases(lower, _SUGGESTIVE):
        before = [o for o in observations if o[1] <= at and sentence[o[0]] == sentence[at]]
        after = [o for o in observations if o[0] >= at + width and sentence[o[0]] == sentence[at]]
        if before and after:
            entities[ids[before[-1][0]]]["relations"].append(["suggestive_of", ids[after[0][0]]])
    return {"text": " ".join(tokens), "entities": entities}


def _segments(lower: list[str]) -> tuple[list[int], list[int]]:
    """Sentence and clause index of every token (a boundary token closes its segment)."""
    sentence, clause, s, c = [], [], 0, 0
    for token in lower:
        sentence.append(s)
        clause.append(c)
        s += token in _SENTENCE_END
        c += token in _CLAUSE_END
    return sentence, clause


def _match_terms(lower: list[str]) -> list[tuple[int, int, str]]:
    spans, i = [], 0
    while i < len(lower):
        for n in range(min(_LONGEST, len(lower) - i), 0, -1):
            kind = _LEXICON.get(tuple(lower[i:i + n]))
            if kind:
                spans.append((i, i + n, kind))
                i += n
                break
        else:
            i += 1
    return spans


def _cue_label(lower: list[str], clause: list[int], start: int) -> str:
    for i in range(start - 1, -1, -1):
        if clause[i] != clause[start]:
            break
        if lower[i] in _NEGATION:
            return ABSENT
        if lower[i] in _UNCERTAINTY:
            return UNCERTAIN
    return PRESENT


def _gap(a: tuple[int, int, str], b: tuple[int, int]) -> int:
    return b[0] - a[1] if a[0] < b[0] else a[0] - b[1]


def _find_phrases(lower: list[str], phrases: Iterable[tuple[str, ...]]) -> list[tuple[int, int]]:
    found = [(i, len(p)) for p in phrases for i in range(len(lower) - len(p) + 1)
             if tuple(lower[i:i + len(p)]) == p]
    return sorted(found)
