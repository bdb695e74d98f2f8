"""The whole pipeline through the CLI, on a tiny grid: generate data -> sweep -> fine-tune -> decode ->
score -> records -> tables; then `score` rescores the saved predictions to the record's numbers, and
a rerun does nothing. Real runner, real model, real plugins; only the sizes are small."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, cwd):
    env = dict(os.environ, PALIGEMMA_TRANSFER_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "grid.yaml").write_text(textwrap.dedent(f"""
        name: tiny
        demo: {{num_train: 12, num_eval: 6, seed: 5}}
        tasks: [vqav2, docvqa]
        sizes: [nano-s]
        resolutions: [32]
        lrs: {{default: [1.0e-3, 3.0e-3], docvqa: [1.0e-3]}}
        protocol:
          sweep: {{split: minival}}
          final: {{seeds: 1, split: eval}}
        data_root: data
        checkpoints: random
        overrides:
          all: {{steps: 3, batch_size: 4, text_len: 24, max_decode_len: 4, eval_batch_size: 6,
                tokenizer: {REPO / 'model' / 'assets' / 'nano_tokenizer.model'}}}
    """))
    proc = _cli("run", "grid.yaml", "--workdir", "out", "--quiet", cwd=work)
    return work, proc


def test_grid_runs_end_to_end_and_writes_tables(grid_run):
    work, proc = grid_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (work / "out" / "records").glob("*.json")]
    # vqav2: 2 sweep cells + 1 final; docvqa: one lr, so no sweep, 1 final.
    phases = sorted((r["task"], r["phase"]) for r in records)
    assert phases == [("docvqa", "final"), ("vqav2", "final"), ("vqav2", "sweep"), ("vqav2", "sweep")]
    assert all(r["demo"] and r["steps"] == 3 for r in records)
    md = (work / "out" / "tables" / "tables.md").read_text()
    assert "demo scale" in md.lower() and "vqav2" in md and "docvqa" in md
    assert "demo scale" in proc.stderr.lower()
    for r in records:
        rows = [json.loads(line) for line in
                (work / "out" / "predictions" / f"{r['cell_id']}.jsonl").read_text().splitlines()]
        assert len(rows) == r["extra"]["num_eval_examples"] > 0
        assert {"id", "prediction", "parsed"} <= set(rows[0])


def test_score_command_reproduces_the_record(grid_run):
    work, _ = grid_run
    for path in (work / "out" / "records").glob("docvqa-*.json"):
        record = json.loads(path.read_text())
        proc = _cli("score", "docvqa", "--data", "data/docvqa", "--predictions",
                    f"out/predictions/{record['cell_id']}.jsonl", "--split", record["split"], "--json",
                    cwd=work)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == pytest.approx(record["metrics"])


def test_rerun_skips_every_finished_cell(grid_run):
    work, _ = grid_run
    before = {p.name: p.stat().st_mtime_ns for p in (work / "out" / "records").glob("*.json")}
    proc = _cli("run", "grid.yaml", "--workdir", "out", "--quiet", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in (work / "out" / "records").glob("*.json")}
    assert after == before
