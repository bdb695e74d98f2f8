"""A cell on a split without public answers (VQAv2 test) writes the test server's file, in EvalAI's format
with every question of the split's question file answered, and a record that says it was not scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cell.run_cell import SUBMISSION_FILE, run_cell, submission_writer
from harness.run.grid import load_grid
from tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent

GRID = """\
name: testdev
train: false
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
protocol:
  final: {{split: test}}
data_root: {data}
checkpoints: {ckpt}
overrides:
  all: {{eval_batch_size: 8, text_len: 48, max_decode_len: 6}}
"""


def test_only_splits_without_public_answers_are_submitted():
    assert submission_writer(get_task("vqav2"), "test") is not None
    assert submission_writer(get_task("docvqa"), "test") is not None
    assert submission_writer(get_task("vqav2"), "eval") is None
    assert submission_writer(get_task("coco_captions"), "test") is None  # Karpathy's test: public captions


@pytest.mark.slow
def test_a_vqav2_test_cell_writes_an_evalai_submission_for_every_question(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data" / "vqav2"
    get_task("vqav2").write_demo(data, num_train=4, num_eval=6, seed=0)
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data", ckpt=REPO / "checkpoints" / "nano" / "nano-s-32.npz"))
    grid = load_grid(path)
    (cell,) = grid.final_cells(grid.fixed_lrs())
    out = run_cell(cell, tmp_path / "cell", progress=False)
    assert out["metrics"] == {} and out["scored"] is False and out["submission"] == SUBMISSION_FILE
    entries = json.loads((tmp_path / "cell" / SUBMISSION_FILE).read_text())
    questions = json.loads((data / "v2_OpenEnded_mscoco_test2015_questions.json").read_text())["questions"]
    assert isinstance(entries, list) and all(set(e) == {"question_id", "answer"} for e in entries)
    assert all(isinstance(e["question_id"], int) and isinstance(e["answer"], str) for e in entries)
    assert sorted(e["question_id"] for e in entries) == sorted(q["question_id"] for q in questions)
