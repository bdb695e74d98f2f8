"""Test-server submission files, for the splits whose answers are not public.

- VQAv2 test-dev / test (EvalAI, https://eval.ai/web/challenges/challenge-page/830): a JSON list with one
  {"question_id": int, "answer": str} for every question of the split's question file.
- DocVQA test (RRC, https://rrc.cvc.uab.es/?ch=17, task 1): a JSON list of {"questionId": int, "answer": str}.
- COCO captions test (the COCO caption server, codalab): a JSON list of {"image_id": int, "caption": str},
  one per image.

Each writer checks that every expected id has exactly one answer (a server rejects or silently zeroes a
file that misses one) and names the first missing or unknown id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The prepared splits without public answers, per task: a cell on one of them writes a submission, not
# scores (harness/cell/run_cell.py). VQAv2's `test` holds the test2015 questions (EvalAI scores test-dev and
# test-std from one file of them); DocVQA's the RRC test questions. COCO captions' `test` is Karpathy's,
# which has public captions and is scored here; `write_coco_captions` serves the caption server's own
# test2014 images for a user who decodes them.
UNSCORED_SPLITS: dict[str, tuple[str, ...]] = {
    "vqav2": ("test-dev", "test"),
    "docvqa": ("test",),
}


def _entries(predictions: Mapping[Any, str], expected: Iterable[Any], id_key: str, value_key: str,
             what: str) -> list[dict[str, Any]]:
    expected = [int(i) for i in expected]
    given = {int(k): v for k, v in predictions.items()}
    missing = [i for i in expected if i not in given]
    if missing:
        raise ValueError(f"{what}: {len(missing)} of {len(expected)} ids have no prediction, e.g. {missing[0]}")
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise ValueError(f"{what}: {len(unknown)} predictions for ids not in the split, e.g. {unknown[0]}")
    out = []
    for i in expected:
        value = given[i]
        if not isinstance(value, str):
            raise ValueError(f"{what}: the prediction for {id_key} {i} is {type(value).__name__}, not text")
        out.append({id_key: i, value_key: value})
    return out


def _write(path: str | Path, entries: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def vqav2_question_ids(questions_file: str | Path) -> list[int]:
    """Every question id of an official v2_OpenEnded_mscoco_<split>_questions.json, in file order."""
    data = json.loads(Path(questions_file).read_text(encoding="utf-8"))
    try:
        return [int(q["question_id"]) for q in data["questions"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{questions_file}: expected {{'questions': [{{'question_id': ...}}]}} ({e!r})") from None


def write_vqav2(path: str | Path, predictions: Mapping[Any, str], question_ids: Iterable[Any]) -> Path:
    """EvalAI's VQAv2 results file: [{"question_id": int, "answer": str}] for every question."""
    return _write(path, _entries(predictions, question_ids, "question_id", "answer", "VQAv2 submission"))


def write_docvqa(path: str | Path, predictions: Mapping[Any, str], question_ids: Iterable[Any]) -> Path:
    """RRC's DocVQA task 1 results file: [{"questionId": int, "answer": str}] for every question."""
    return _write(path, _entries(predictions, question_ids, "questionId", "answer", "DocVQA submission"))


def write_coco_captions(path: str | Path, predictions: Mapping[Any, str], image_ids: Iterable[Any]) -> Path:
    """The COCO caption server's results file: [{"image_id": int, "caption": str}] for every image."""
    return _write(path, _entries(predictions, image_ids, "image_id", "caption", "COCO captions submission"))


WRITERS = {"vqav2": write_vqav2, "docvqa": write_docvqa, "coco_captions": write_coco_captions}
