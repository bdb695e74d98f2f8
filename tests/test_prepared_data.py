"""Prepared data keyed on the raw files and kept outside the data folder, so an edited answer is scored
anew without deleting anything by hand; `--json` output that is exactly one JSON document (no library's
lines before it); and what `score` says about a predictions file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def docvqa(tmp_path, monkeypatch):
    """Demo DocVQA data, the cache in tmp_path, and predictions = the first answer of 3 of 4 questions."""
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "raw"
    get_task("docvqa").write_demo(raw, num_train=6, num_eval=4, seed=0)
    questions = json.loads((raw / "val_v1.0_withQT.json").read_text())["data"]
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": q["questionId"], "prediction": q["answers"][0]}) + "\n"
                             for q in questions[:3]))
    return raw, preds


def _score(capsys, *args):
    code = main(["score", "docvqa", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_edited_answer_is_scored_again_and_the_change_announced(docvqa, capsys):
    raw, preds = docvqa
    code, out, _ = _score(capsys, "--data", raw, "--predictions", preds)
    assert code == 0 and json.loads(out)["anls"] == pytest.approx(0.75)
    qa = raw / "val_v1.0_withQT.json"
    data = json.loads(qa.read_text())
    data["data"][0]["answers"] = ["something else entirely"]
    qa.write_text(json.dumps(data))
    os.utime(qa, ns=(qa.stat().st_atime_ns, qa.stat().st_mtime_ns + 1_000_000_000))
    code, out, err = _score(capsys, "--data", raw, "--predictions", preds)
    assert code == 0 and json.loads(out)["anls"] == pytest.approx(0.5)
    changed = [line for line in err.splitlines() if "changed since they were prepared" in line]
    assert len(changed) == 1 and "val_v1.0_withQT.json" in changed[0]


def test_cache_is_outside_the_data_folder_and_cache_dir_chooses_it(docvqa, capsys, tmp_path):
    raw, preds = docvqa
    assert _score(capsys, "--data", raw, "--predictions", preds)[0] == 0
    assert not (raw / "_tfds").exists() and sorted(p.name for p in raw.iterdir()) == sorted(
        p.name for p in raw.iterdir() if not p.name.startswith("_"))
    assert (tmp_path / "cache" / "data" / "docvqa").is_dir()
    assert _score(capsys, "--data", raw, "--predictions", preds, "--cache-dir", tmp_path / "mine")[0] == 0
    assert list((tmp_path / "mine" / "docvqa").glob("*/*-val"))


def test_scoring_eval_needs_no_train_files(docvqa, capsys):
    raw, preds = docvqa
    (raw / "train_v1.0_withQT.json").unlink()
    code, out, err = _score(capsys, "--data", raw, "--predictions", preds)
    assert code == 0, err
    assert json.loads(out)["anls"] == pytest.approx(0.75)


def test_score_says_what_matched(docvqa, capsys):
    raw, preds = docvqa
    code, _, err = _score(capsys, "--data", raw, "--predictions", preds)
    assert code == 0 and "3 prediction(s) matched of 4 reference(s); 1 reference(s) had no prediction" in err


@pytest.mark.parametrize("content,expected", [
    (b"", "no predictions (the file is empty)"),
    (b'{"id": 1, "prediction": "a"}\n{"id": 2, "prediction": "b"}\n{"id": 1, "prediction": "c"}\n',
     "lines 1 and 3 both predict id '1'"),
    (b'{"id": 1, "prediction": "a"}\n{"id": 2, "predic', ":2: malformed JSON line"),
    (b'{"id": 1, "prediction": "caf\xe9"}\n', "not UTF-8"),
])
def test_bad_predictions_files_name_the_file(tmp_path, capsys, content, expected):
    preds = tmp_path / "bad.jsonl"
    preds.write_bytes(content)
    code, out, err = _score(capsys, "--data", tmp_path / "unused", "--predictions", preds)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert str(preds) in err and expected in err


def test_unknown_id_names_the_file(docvqa, capsys):
    raw, preds = docvqa
    preds.write_text('{"id": 999999, "prediction": "x"}\n')
    code, _, err = _score(capsys, "--data", raw, "--predictions", preds)
    assert code == 2 and str(preds) in err and "999999" in err


def test_json_stdout_is_one_document_on_first_use(docvqa, tmp_path):
    """In a fresh process, so that TFDS's first-use output and library import noise are included."""
    raw, preds = docvqa
    env = dict(os.environ, PALIGEMMA_TRANSFER_CACHE=str(tmp_path / "fresh"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for args in (["score", "docvqa", "--data", str(raw), "--predictions", str(preds), "--json"],
                 ["tasks", "--json"], ["tasks", "--recipes", "--task", "docvqa", "--json"], ["cost", "--json"]):
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], check=False, cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        json.loads(proc.stdout)  # the whole of stdout is one JSON document
        assert "Downloading and preparing" not in proc.stdout + proc.stderr
        assert "OpenCV" not in proc.stderr
