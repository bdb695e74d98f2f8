"""Submission files in the servers' formats (EvalAI VQAv2, RRC DocVQA, COCO captions)."""

from __future__ import annotations

import json

import pytest

from tasks.submission import UNSCORED_SPLITS, vqav2_question_ids, write_coco_captions, write_docvqa, write_vqav2


def _evalai_vqav2_valid(results: object, question_ids: list[int]) -> bool:
    """EvalAI's VQA checks, as its challenge page states them: a list of objects with exactly the keys
    question_id (int) and answer (str), one per question of the split, no other ids."""
    return (isinstance(results, list)
            and all(isinstance(r, dict) and set(r) == {"question_id", "answer"} for r in results)
            and all(type(r["question_id"]) is int and isinstance(r["answer"], str) for r in results)
            and sorted(r["question_id"] for r in results) == sorted(question_ids))


def test_vqav2_test_dev_submission_answers_every_question(tmp_path):
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "test-dev2015",
                 "questions": [{"image_id": 1, "question": "What?", "question_id": 10},
                               {"image_id": 1, "question": "Who?", "question_id": 11},
                               {"image_id": 2, "question": "How many?", "question_id": 20}]}
    qfile = tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    qfile.write_text(json.dumps(questions))
    ids = vqav2_question_ids(qfile)
    path = write_vqav2(tmp_path / "out" / "vqav2_test-dev.json", {"10": "yes", 11: "a man", 20: "2"}, ids)
    results = json.loads(path.read_text())
    assert _evalai_vqav2_valid(results, ids)
    assert results == [{"question_id": 10, "answer": "yes"}, {"question_id": 11, "answer": "a man"},
                       {"question_id": 20, "answer": "2"}]
    with pytest.raises(ValueError, match="1 of 3 ids have no prediction, e.g. 20"):
        write_vqav2(tmp_path / "x.json", {10: "yes", 11: "no"}, ids)
    with pytest.raises(ValueError, match="not in the split, e.g. 99"):
        write_vqav2(tmp_path / "x.json", {10: "a", 11: "b", 20: "c", 99: "d"}, ids)


def test_docvqa_and_coco_formats(tmp_path):
    doc = json.loads(write_docvqa(tmp_path / "d.json", {5: "1999"}, [5]).read_text())
    assert doc == [{"questionId": 5, "answer": "1999"}]
    cap = json.loads(write_coco_captions(tmp_path / "c.json", {7: "a dog"}, ["7"]).read_text())
    assert cap == [{"image_id": 7, "caption": "a dog"}]
    with pytest.raises(ValueError, match="not text"):
        write_docvqa(tmp_path / "d.json", {5: None}, [5])
    assert UNSCORED_SPLITS["vqav2"] == ("test-dev", "test")
