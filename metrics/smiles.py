"""SMILES exact match as MolScribe's `molscribe/evaluate.py` computes it (docs/metric-facts.md §5).

`canon_smiles`, MolScribe's "main metric" and the one PaliGemma 2's ChemDraw number compares with, is the
fraction of molecules whose RDKit canonical SMILES match after deleting cis/trans marks ('/' and '\\')
from both strings; tetrahedral chirality counts. Before RDKit parses a string, R-groups are rewritten
the way MolScribe does: the string is split with SmilesPE's atom-wise tokenizer (which silently drops
characters it does not know), `[R<digits>]` becomes `[<digits>*]` and any other bracket token RDKit
cannot read as an atom becomes `*`. A string RDKit still cannot parse is compared as its rewritten raw
text. Gold empties become "<empty>" so that an empty prediction never matches them; a missing prediction
counts as "". Companions: `canon_smiles_em` (full stereo), `graph` (no stereo at all), `chiral`
(`canon_smiles` over golds with an '@'; absent when there are none, where MolScribe reports -1),
`chiral_ratio`, `gold_valid` and `pred_valid` (fractions RDKit parsed).

Canonical strings change across RDKit releases; only equality matters, and gold and prediction always
go through the same RDKit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rdkit import Chem, rdBase
from SmilesPE.pretokenizer import atomwise_tokenizer

EMPTY_GOLD = "<empty>"


def canonicalize(smiles: object, *, ignore_chiral: bool = False, ignore_cistrans: bool = False,
                 replace_rgroup: bool = True) -> tuple[str, bool]:
    """MolScribe's canonicalisation: (canonical SMILES, True), or (rewritten input, False) if unparsable."""
    if not isinstance(smiles, str) or not smiles:
        return "", False
    with rdBase.BlockLogs():  # RDKit logs every unparsable string; a model's mistakes are not news
        return _canonicalize(smiles, ignore_chiral, ignore_cistrans, replace_rgroup)


def _canonicalize(smiles: str, ignore_chiral: bool, ignore_cistrans: bool,
                  replace_rgroup: bool) -> tuple[str, bool]:
    if ignore_cistrans:
        smiles = smiles.replace("/", "").replace("\\", "")
    if replace_rgroup:
        tokens = atomwise_tokenizer(smiles)
        for k, token in enumerate(tokens):
            if token[0] == "[" and token[-1] == "]":
                symbol = token[1:-1]
                if symbol[0] == "R" and symbol[1:].isdigit():
                    tokens[k] = f"[{symbol[1:]}*]"
                elif Chem.AtomFromSmiles(token) is None:
                    tokens[k] = "*"
        smiles = "".join(tokens)
    try:
        return Chem.CanonSmiles(smiles, useChiral=not ignore_chiral), True
    except Exception:  # RDKit raises several types for unparsable input; all mean "not a molecule"
        return smiles, False


@dataclass(frozen=True)
class SmilesScores:
    """Corpus fractions (MolScribe's keys) and, per example, whether `canon_smiles` matched and whether
    RDKit parsed the prediction."""

    metrics: dict[str, float]
    matches: list[bool]
    pred_parsed: list[bool]


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def smiles_scores(predictions: Sequence[str], golds: Sequence[str]) -> SmilesScores:
    """Score predictions against gold SMILES, position by position."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold SMILES")
    full = [canonicalize(g) for g in golds]
    gold_full = [s or EMPTY_GOLD for s, _ in full]
    gold_graph = [canonicalize(g, ignore_chiral=True)[0] or EMPTY_GOLD for g in golds]
    gold_main = [canonicalize(g, ignore_cistrans=True)[0] or EMPTY_GOLD for g in golds]
    pred_full = [canonicalize(p) for p in predictions]
    pred_graph = [canonicalize(p, ignore_chiral=True)[0] for p in predictions]
    pred_main = [canonicalize(p, ignore_cistrans=True)[0] for p in predictions]
    matches = [g == p for g, p in zip(gold_main, pred_main)]
    chiral = [m for m, g in zip(matches, gold_main) if "@" in g]
    metrics = {
        "canon_smiles": _mean(matches),
        "canon_smiles_em": _mean([g == p for g, (p, _) in zip(gold_full, pred_full)]),
        "graph": _mean([g == p for g, p in zip(gold_graph, pred_graph)]),
        "chiral_ratio": len(chiral) / len(golds) if golds else 0.0,
        "gold_valid": _mean([ok for _, ok in full]),
        "pred_valid": _mean([ok for _, ok in pred_full]),
    }
    if chiral:
        metrics["chiral"] = _mean(chiral)
    return SmilesScores(metrics=metrics, matches=matches, pred_parsed=[ok for _, ok in pred_full])
