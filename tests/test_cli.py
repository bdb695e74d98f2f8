"""The `paligemma-transfer` command: help, listings, cost, and one-line errors for bad input."""

import json

import pytest

from harness.cli import main


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command(capsys):
    code, out, _ = _run(capsys)
    assert code == 0
    for command in ("run", "eval", "tables", "tasks", "score", "cost", "pretrain"):
        assert command in out


def test_tasks_json_lists_the_plugins_with_headlines(capsys):
    code, out, _ = _run(capsys, "tasks", "--json")
    rows = {r["task"]: r for r in json.loads(out)}
    assert code == 0
    assert {k: v["headline"] for k, v in rows.items()} == {
        "vqav2": "accuracy", "docvqa": "anls", "coco_captions": "cider", "pubtabnet": "teds",
        "chemdraw": "canon_smiles", "mimic_cxr": "radgraph_partial", "icdar15": "e2e_f1",
        "totaltext": "e2e_f1", "hiertext": "e2e_f1", "textocr": "e2e_f1"}


def test_recipe_table_holds_the_papers_numbers(capsys):
    code, out, _ = _run(capsys, "tasks", "--recipes", "--json")
    rows = {(r["task"], r["size"], r["resolution"]): r for r in json.loads(out)}
    assert code == 0 and len(rows) == 10 * 9  # the seven tasks and the three text-spotting sources
    assert rows["icdar15", "3b", 896]["steps"] == 15000 and rows["icdar15", "3b", 896]["lr"] == 1e-5
    assert rows["chemdraw", "10b", 448]["label_smoothing"] == 0.1
    assert rows["coco_captions", "3b", 224]["decode"] == "beam" and rows["coco_captions", "3b", 224]["beam_size"] == 2
    assert rows["vqav2", "3b", 224]["weight_decay"] == 1e-6 and rows["vqav2", "3b", 448]["weight_decay"] == 0.0


def test_cost_json_has_the_published_param_counts(capsys):
    code, out, _ = _run(capsys, "cost", "--json")
    rows = {r["config"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["3b-224"]["params"] == 3_032_094_960 and rows["3b-448"]["params"] == 3_032_979_696
    assert rows["28b-896"]["flops_per_example"] > rows["3b-224"]["flops_per_example"]


@pytest.mark.parametrize("body,expected", [
    ("name: x\ntasks: [vqa]\nsizes: [nano-s]\nresolutions: [32]\nlrs: [1.0e-3]\ncheckpoints: random\n",
     "unknown task 'vqa'"),
    ("name: x\ntasks: [vqav2]\nsizes: [nano-s]\nresolutions: [48]\nlrs: [1.0e-3]\ncheckpoints: random\n",
     "resolution 48"),
    ("name: x\ntasks: [vqav2]\nsizes: [nano-s]\nresolutions: [32]\nlrs: []\ncheckpoints: random\n", "lrs"),
    ("name: x\ntasks: [vqav2\n", "grid.yaml:"),
    ("name: x\ntasks: [vqav2]\nsizes: [nano-s]\nresolutions: [32]\nlrs: [1.0e-3]\n"
     "checkpoints: ckpt/{size}-{resolution}.npz\n", "nano-s-32.npz"),
])
def test_bad_grid_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, monkeypatch, body, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(body)
    code, out, err = _run(capsys, "run", "grid.yaml", "--workdir", "work")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert not (tmp_path / "work").exists()


def test_score_names_the_bad_predictions_line(tmp_path, capsys):
    from tasks.registry import get_task

    get_task("vqav2").write_demo(tmp_path / "data", num_train=4, num_eval=3, seed=0)
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 1, "prediction": "yes"}\n\n{"id": 2, "prediction": "no"\n')
    code, _, err = _run(capsys, "score", "vqav2", "--data", str(tmp_path / "data"), "--predictions", str(preds))
    assert code == 2 and f"{preds}:3" in err
    preds.write_text('{"id": 1, "text": "yes"}\n')
    code, _, err = _run(capsys, "score", "vqav2", "--data", str(tmp_path / "data"), "--predictions", str(preds))
    assert code == 2 and f"{preds}:1: no 'prediction'" in err


def test_score_on_a_missing_data_dir_says_what_to_download(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 1, "prediction": "yes"}\n')
    code, _, err = _run(capsys, "score", "docvqa", "--data", str(tmp_path / "nothing"), "--predictions", str(preds))
    assert code == 2 and "val_v1.0_withQT.json" in err


def test_matmul_peak_is_a_plausible_rate():
    """The rate `run` prints beside its time: 2 n^3 FLOPs per n x n matmul over the best time."""
    from harness.cli import _matmul_peak_gflops

    assert 0.01 < _matmul_peak_gflops(seconds=0.05, n=128) < 1e5
