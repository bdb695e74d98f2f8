"""sacrebleu corpus BLEU and chrF (extra metrics of COCO captions and MIMIC-CXR) equal what sacrebleu's own
command line prints for the same text files: multiple and variable references, case, punctuation, a miss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metrics.sacrebleu_metrics import sacrebleu_scores

# COCO-like: up to three references, one example with only one, raw text (case, punctuation kept).
PREDICTIONS = {"1": "A man rides a red bicycle down the street.",
               "2": "two dogs play in the snow",
               "3": "",  # a miss scores as empty text
               "4": "A plate of food, with broccoli and rice."}
REFERENCES = {"1": ["A man riding a red bike on a city street.", "a person rides a bicycle down a road",
                    "A cyclist on a red bicycle."],
              "2": ["Two dogs playing in the snow.", "two puppies run through snow"],
              "3": ["A clock tower against a blue sky."],
              "4": ["A plate with broccoli, rice and chicken.", "Food on a white plate.",
                    "a dinner plate of rice and vegetables"]}


def _cli(tmp_path: Path, predictions, references, pad: str = "repeat") -> tuple[float, float]:
    """`sacrebleu REF1 REF2 ... -i HYP -m bleu chrf -b`: the references as parallel files. Where an example
    has fewer references, pad="repeat" repeats its first one (a repeated reference changes neither BLEU's
    clipped counts and closest length nor chrF's best reference, so it is exactly a missing one), and
    pad="empty" writes an empty line, which sacrebleu reads as a reference of length 0."""
    ids = list(references)
    depth = max(len(r) for r in references.values())
    refs = []
    for k in range(depth):
        path = tmp_path / f"ref{k}.txt"
        lines = [references[i][k] if k < len(references[i]) else
                 (references[i][0] if pad == "repeat" else "") for i in ids]
        path.write_text("".join(line + "\n" for line in lines))
        refs.append(str(path))
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("".join(predictions.get(i, "") + "\n" for i in ids))
    exe = Path(sys.executable).with_name("sacrebleu")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "sacrebleu"]
    proc = subprocess.run(command + refs + ["-i", str(hyp), "-m", "bleu", "chrf", "-b", "-w", "4"],
                          capture_output=True, text=True, check=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    bleu, chrf = json.loads(proc.stdout)  # with two metrics, -b prints a JSON list of the scores
    return bleu, chrf


def test_multi_reference_corpus_scores_match_the_cli(tmp_path):
    scores, signatures = sacrebleu_scores(PREDICTIONS, REFERENCES)
    bleu, chrf = _cli(tmp_path, PREDICTIONS, REFERENCES)
    assert 0 < bleu < 100 and 0 < chrf < 100
    assert 100 * scores["sacrebleu_bleu"] == pytest.approx(bleu, abs=5e-5)
    assert 100 * scores["sacrebleu_chrf"] == pytest.approx(chrf, abs=5e-5)
    assert "tok:13a" in signatures["sacrebleu_bleu"] and "nrefs:var" in signatures["sacrebleu_bleu"]
    assert signatures["sacrebleu_chrf"].startswith("nrefs:var|case:mixed|eff:yes|nc:6|nw:0|space:no")


def test_empty_reference_lines_are_not_missing_references(tmp_path):
    """Why missing references are None (dropped by sacrebleu) and not "": the CLI's empty lines count as
    references of length 0, which the empty prediction of example 3 then matches for the brevity penalty."""
    scores, _ = sacrebleu_scores(PREDICTIONS, REFERENCES)
    bleu_empty_lines, _ = _cli(tmp_path, PREDICTIONS, REFERENCES, pad="empty")
    assert bleu_empty_lines > 100 * scores["sacrebleu_bleu"] + 1


def test_single_reference_reports_match_the_cli(tmp_path):
    """MIMIC-CXR: one reference report per study, several sentences each."""
    refs = {"s1": ["No acute cardiopulmonary process. Heart size is normal."],
            "s2": ["Small left pleural effusion. No pneumothorax."]}
    preds = {"s1": "Heart size is normal. No acute cardiopulmonary process.", "s2": "No pneumothorax."}
    scores, signatures = sacrebleu_scores(preds, refs)
    bleu, chrf = _cli(tmp_path, preds, refs)
    assert 100 * scores["sacrebleu_bleu"] == pytest.approx(bleu, abs=5e-5)
    assert 100 * scores["sacrebleu_chrf"] == pytest.approx(chrf, abs=5e-5)
    assert "nrefs:1" in signatures["sacrebleu_bleu"]


def test_perfect_and_bad_input():
    scores, _ = sacrebleu_scores({k: v[0] for k, v in REFERENCES.items()}, REFERENCES)
    assert scores == {"sacrebleu_bleu": pytest.approx(1.0), "sacrebleu_chrf": pytest.approx(1.0)}
    with pytest.raises(ValueError, match=r"references\['x'\] must be a non-empty list of strings"):
        sacrebleu_scores({}, {"x": "a string, not a list"})


def test_the_tasks_report_them_as_extra_metrics(tmp_path):
    from tasks.registry import get_task

    coco = get_task("coco_captions")
    coco.write_demo(tmp_path / "coco", num_train=2, num_eval=3, seed=1)
    refs = coco.references(tmp_path / "coco", "eval")
    preds = {k: v[0] for k, v in refs.items()}
    scores = coco.score(preds, refs)
    assert coco.headline == "cider"
    assert scores.metrics["sacrebleu_bleu"] == pytest.approx(sacrebleu_scores(preds, refs)[0]["sacrebleu_bleu"])
    assert "tok:13a" in scores.extra["sacrebleu_signatures"]["sacrebleu_bleu"]
    mimic = get_task("mimic_cxr")
    mimic.write_demo(tmp_path / "mimic", num_train=2, num_eval=3, seed=1)
    refs = mimic.references(tmp_path / "mimic", "eval")
    scores = mimic.score({k: "No acute process." for k in refs}, refs)
    expected = sacrebleu_scores({k: "No acute process." for k in refs}, {k: [r] for k, r in refs.items()})[0]
    assert scores.metrics["sacrebleu_chrf"] == pytest.approx(expected["sacrebleu_chrf"])
    assert mimic.headline != "sacrebleu_bleu"
