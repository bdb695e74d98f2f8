"""Every benchmark in bench/ runs end to end at a tiny size and prints what docs/benchmarks.md says it prints.

The timings are not checked; the point is that a user's `python -m bench.<name>` works. Each test calls the
script's `main(argv)` in this process, on a nano config or a handful of examples. The two that compare
against transformers take half a minute and are marked slow; our side of the train step runs by default."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RATE = r"\d+\.\d+"


def test_train_step_times_our_step(capsys):
    from bench import train_step

    train_step.main(["--config", "nano-s-32", "--batch", "2", "--text-len", "8", "--dtype", "float32",
                     "--repeats", "1", "--skip-transformers"])
    out = capsys.readouterr().out
    assert "matmul peak measured (float32 2048^3 jnp.dot)" in out
    assert re.search(rf"ours: +{RATE} examples/s .* of the measured matmul peak; peak memory", out), out
    assert "transformers:" not in out


@pytest.mark.slow  # ~30 s on 2 loaded cores: transformers' import and model, and our step
def test_train_step_times_ours_and_transformers(capsys):
    pytest.importorskip("transformers")
    from bench import train_step

    train_step.main(["--config", "nano-s-32", "--batch", "2", "--text-len", "8", "--dtype", "float32",
                     "--repeats", "1"])
    out = capsys.readouterr().out
    assert re.search(rf"ours: +{RATE} examples/s .* of the measured matmul peak; peak memory", out), out
    assert re.search(rf"transformers: +{RATE} examples/s", out) and re.search(rf"ratio ours/transformers: {RATE}x",
                                                                              out)


@pytest.mark.slow  # ~35 s on 2 loaded cores: a train step and four decoders compiled on each side
def test_model_vs_transformers_compares_training_and_decoding(capsys):
    pytest.importorskip("transformers")
    from bench import model_vs_transformers

    model_vs_transformers.main(["--config", "nano-s-32", "--train-batch", "2", "--text-len", "8",
                                "--prompt-len", "4", "--new-tokens", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "train step (batch 2, 8 text tokens)" in out and "of the float32 peak" in out
    assert out.count("greedy decode, end to end") == 2 and out.count("ratio ours/transformers") == 7


def test_metrics_speed_scores_teds_and_cider_equal_to_the_references(capsys):
    from bench import metrics_speed

    assert metrics_speed.main(["--tables", "6", "--images", "20"]) == 0
    out = capsys.readouterr().out
    assert "TEDS" in out and "CIDEr" in out and "equal: True" in out


def test_plan_vs_xla_prints_one_row_per_case(capsys):
    from bench import plan_vs_xla

    assert plan_vs_xla.main(["nano-s-32:8:1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| nano-s-32 |")]
    assert len(rows) == 1
    for row in rows:
        xla, plan, ratio = (float(cell) for cell in row.split("|")[6:9])
        assert xla > 0 and plan > 0 and ratio == pytest.approx(plan / xla, abs=0.01)


def test_step_hlo_splits_the_step_by_component(capsys):
    from bench import step_hlo

    step_hlo.main(["--config", "nano-s-32", "--batch", "2", "--text-len", "8", "--compute-dtype", "float32"])
    out = capsys.readouterr().out
    assert "nano-s-32, batch 2, text_len 8" in out
    shares = {row.split("|")[1].strip(): float(row.split("|")[3].strip(" %")) for row in out.splitlines()
              if row.startswith("| ") and "%" in row}
    assert {"vit matmul", "llm matmul", "logits + loss", "optimizer"} <= set(shares)
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)


def tiny_demo_grid(tmp_path: Path) -> Path:
    """The demo grid cut to nano-s at 32 px, two tasks, 4 training and 3 eval examples, random weights."""
    grid = yaml.safe_load((ROOT / "configs/grids/demo.yaml").read_text())
    tasks = ["vqav2", "docvqa"]
    grid.update(name="tiny", demo={"num_train": 4, "num_eval": 3, "seed": 0}, tasks=tasks, sizes=["nano-s"],
                resolutions=[32], checkpoints="random", data_root=str(tmp_path / "data"), lrs=[3.0e-5],
                protocol={"final": {"seeds": 1, "split": "eval", "resolutions": [32]}})
    grid["overrides"] = {k: v for k, v in grid["overrides"].items() if k in ("all", *tasks)}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_image_use_prints_a_gap_per_task_and_prompt(tmp_path, capsys):
    """One row per task with right, shuffled, gap and se; with --by-prompt, one indented row per distinct
    prompt under its task (DocVQA's questions). The grid's demo data is written when missing."""
    from bench import image_use

    image_use.main(["--grid", str(tiny_demo_grid(tmp_path)), "--by-prompt"])
    lines = capsys.readouterr().out.splitlines()[1:]
    rows = [line.split() for line in lines if not line.startswith(" ")]
    assert [r[:2] for r in rows] == [["random:nano-s-32", "vqav2"], ["random:nano-s-32", "docvqa"]]
    for _, _, right, shuffled, gap, se in rows:
        assert abs(float(shuffled) - float(right) - float(gap)) < 2e-3 and float(se) >= 0
    prompts = [line for line in lines[lines.index(next(x for x in lines if " docvqa " in x)) + 1:]]
    assert prompts and all(p.startswith(" ") and "?" in p for p in prompts)


def test_image_use_gap_se_is_the_paired_standard_error():
    """The se of the gap is scipy's standard error of the per-example differences (paired, ddof 1)."""
    from scipy import stats

    from bench.image_use import gap_se

    rng = np.random.default_rng(0)
    right = rng.normal(1.0, 0.3, 50)
    wrong = right + rng.normal(0.1, 0.05, 50)  # correlated pairs: the paired se is far below the unpaired one
    assert gap_se(right, wrong) == pytest.approx(stats.sem(wrong - right), rel=1e-9)
    assert gap_se(right, wrong) < 0.5 * np.hypot(stats.sem(right), stats.sem(wrong))
    assert np.isnan(gap_se(right[:1], wrong[:1]))
