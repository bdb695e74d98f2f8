"""The demo diagnostics of issue 12 run end to end on tiny data: `bench/image_use.py` prints one gap per
task and checkpoint, and `bench/reading_curve.py` continues a checkpoint and prints the text tasks' gaps
after each round (both write the demo data they need, as `paligemma-transfer run` does), and
`bench/legibility_probe.py` reads DocVQA pages in the release layout with their OCR files,
`bench/findings_probe.py` reads MIMIC-CXR's findings back from its reports and probes for them, and
`bench/localisation_probe.py` splits ICDAR'15's gap into loc and text tokens after training on it."""

import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from model import checkpoint
from model.config import config_for
from model.paligemma import init_params

ROOT = Path(__file__).resolve().parents[1]
TEXT_TASKS = ["docvqa", "icdar15", "pubtabnet"]


def tiny_grid(tmp_path: Path, **fields) -> Path:
    grid = yaml.safe_load((ROOT / "configs/grids/demo.yaml").read_text())
    grid.update(name="tiny", demo={"num_train": 4, "num_eval": 3, "seed": 0}, tasks=["vqav2", *TEXT_TASKS],
                data_root=str(tmp_path / "data"), **fields)
    keep = ("all", "default", "vqav2", *TEXT_TASKS, *grid["sizes"])
    grid["overrides"] = {k: v for k, v in grid["overrides"].items() if k in keep}
    grid["lrs"] = {k: {t: v for t, v in lrs.items() if t in keep} if isinstance(lrs, dict) else lrs
                   for k, lrs in grid["lrs"].items() if k in keep}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_image_use_prints_a_gap_per_task_and_prompt(tmp_path):
    """One gap per task; with --by-prompt, under each task's row one row per distinct prompt (DocVQA's
    question kinds), whose example-weighted mean is the task's gap. Without --checkpoints, the grid's
    base checkpoints are scored. (One run checks all three: each run of the script costs a JAX start and
    a compile per task.)"""
    grid = tiny_grid(tmp_path, sizes=["nano-s"], resolutions=[32], checkpoints="random",
                     protocol={"final": {"seeds": 1, "split": "eval", "resolutions": [32]}})
    out = run("bench/image_use.py", "--grid", str(grid), "--by-prompt")
    lines = out.splitlines()[1:]
    rows = [line.split() for line in lines if not line.startswith(" ")]
    assert [r[0] for r in rows] == ["random:nano-s-32"] * 4
    assert [r[1] for r in rows] == ["vqav2", *TEXT_TASKS]
    for _, _, right, shuffled, gap, se in rows:
        assert abs(float(shuffled) - float(right) - float(gap)) < 2e-3
        assert se == "nan" or float(se) >= 0
    start = next(i for i, line in enumerate(lines) if line.split()[1] == "docvqa")
    prompts = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        prompts.append(line)
    assert prompts and all("?" in p for p in prompts), prompts  # the questions
    assert all(re.fullmatch(r"[+-]\d+\.\d{3}", p.split()[-1]) for p in prompts)


def test_image_use_groups_prompts_by_their_first_words(tmp_path):
    """--prompt-words 2: VQAv2's prompts all begin `answer en`, so the task has one group, whose gap is
    the task's."""
    out = run("bench/image_use.py", "--grid", str(tiny_grid(tmp_path)), "--checkpoints", "random:nano-s-32",
              "--by-prompt", "--prompt-words", "2")
    lines = out.splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.split()[1] == "vqav2")
    assert lines[start + 1].split()[:2] == ["answer", "en"] and not lines[start + 2].startswith(" ")
    assert lines[start + 1].split()[-1] == lines[start].split()[-2]  # one group: the task's own gap


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


def test_image_use_lifts_a_checkpoint_to_the_next_resolution(tmp_path):
    """--lift-to 64 --encoder: a 32 px checkpoint scored at 64 px as the 64 px stage starts it; its rows
    equal example_losses on harness.pretrain's own lift (continue_at after with_encoder)."""
    from bench.image_use import example_losses
    from harness.grid import load_grid
    from harness.pretrain import continue_at
    from harness.pretrain_encoder import EncoderClassifier, load_encoder, save_encoder, with_encoder

    img = EncoderClassifier(config_for("nano-s", 64).vision, 16).init(
        jax.random.key(1), np.zeros((1, 64, 64, 3)))["params"]["img"]
    save_encoder(tmp_path / "encoder-64.npz", img)
    ckpt = tmp_path / "nano-s-32.npz"
    checkpoint.save_npz(str(ckpt), jax.tree.map(np.asarray, init_params(config_for("nano-s", 32), jax.random.key(0))))
    grid_path = tiny_grid(tmp_path)
    out = run("bench/image_use.py", "--grid", str(grid_path), "--checkpoints", str(ckpt), "--lift-to", "64",
              "--encoder", str(tmp_path / "encoder-64.npz"))
    rows = [line.split() for line in out.splitlines()[1:]]
    assert {r[0] for r in rows} == {f"{ckpt}@64"}
    _, params = checkpoint.load_npz(str(ckpt), config_for("nano-s", 32), dtype=np.float32)
    lifted = continue_at(with_encoder(params, load_encoder(tmp_path / "encoder-64.npz")), config_for("nano-s", 64))
    right, wrong, _ = example_losses(lifted, "nano-s", 64, load_grid(grid_path, check_files=False), "vqav2")
    vqav2 = next(r for r in rows if r[1] == "vqav2")
    assert float(vqav2[2]) == pytest.approx(right.mean(), abs=2e-3)
    assert float(vqav2[4]) == pytest.approx(wrong.mean() - right.mean(), abs=2e-3)
    done = subprocess.run([sys.executable, "bench/image_use.py", "--encoder", "x.npz"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--encoder: expected --lift-to PX" in done.stderr


def test_image_use_limit_scores_the_first_examples_of_a_split(tmp_path):
    """--limit N: the split's first N examples (the seen-data loss on a sample of the pretraining data)."""
    from bench.image_use import example_losses
    from harness.grid import load_grid
    from harness.scheduler import prepare_demo_data

    grid = load_grid(tiny_grid(tmp_path), check_files=False)
    prepare_demo_data(grid)
    params = init_params(config_for("nano-s", 32), jax.random.key(0))
    right, wrong, prompts = example_losses(params, "nano-s", 32, grid, "vqav2", limit=2)
    everything = example_losses(params, "nano-s", 32, grid, "vqav2")
    assert len(right) == len(wrong) == len(prompts) == 2 and len(everything[0]) == 3
    np.testing.assert_allclose(right, everything[0][:2], rtol=1e-5)


def tiny_pretraining(tmp_path: Path) -> tuple[Path, Path]:
    """(a random nano-s-32 checkpoint, the committed pretraining config on 4 examples per task)."""
    ckpt = tmp_path / "nano-s-32.npz"
    checkpoint.save_npz(str(ckpt), jax.tree.map(np.asarray, init_params(config_for("nano-s", 32), jax.random.key(0))))
    spec = yaml.safe_load((ROOT / "configs/pretrain/nano.yaml").read_text())
    spec.update(tokenizer=str(ROOT / spec["tokenizer"]), out=str(tmp_path / "out"))
    spec["data"].update(root=str(tmp_path / "pretrain-data"), num_train=4)
    spec["optimizer"]["batch_size"] = 2
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return ckpt, tmp_path / "spec.yaml"


def test_reading_curve_continues_and_measures(tmp_path):
    config = config_for("nano-s", 32)
    ckpt, _ = tiny_pretraining(tmp_path)
    saved = tmp_path / "new" / "after.npz"  # --save makes its folder
    out = run("bench/reading_curve.py", str(ckpt), "--rounds", "1", "--steps", "1", "--grid",
              str(tiny_grid(tmp_path)), "--pretrain", str(tmp_path / "spec.yaml"), "--save", str(saved))
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["steps", *TEXT_TASKS]
    assert re.fullmatch(r"\s*0( +[+-]\d+\.\d{3}){3}", lines[1])
    assert re.match(r"\s*1( +[+-]\d+\.\d{3}){3}   loss ", lines[2])
    _, params = checkpoint.load_npz(str(saved), config, dtype=np.float32)
    assert params["img"]["pos_embedding"].shape == (1, 16, 128)


def test_reading_curve_on_named_tasks_with_the_tower_frozen(tmp_path):
    """--tasks vqav2=2 --freeze img_tower: one task's gap per round, and the tower leaves the run unchanged."""
    config = config_for("nano-s", 32)
    ckpt, spec = tiny_pretraining(tmp_path)
    saved = tmp_path / "after.npz"
    out = run("bench/reading_curve.py", str(ckpt), "--rounds", "1", "--steps", "2", "--grid",
              str(tiny_grid(tmp_path)), "--pretrain", str(spec), "--save", str(saved),
              "--freeze", "img_tower", "--tasks", "vqav2=2")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["steps", "vqav2"] and lines[0].split()[2] == "(gap,"
    assert re.match(r"\s*2 +[+-]\d+\.\d{3}   loss ", lines[2])
    _, before = checkpoint.load_npz(str(ckpt), config, dtype=np.float32)
    _, after = checkpoint.load_npz(str(saved), config, dtype=np.float32)
    tower = [k for k in before["img"] if k != "head"]
    for key in tower:
        jax.tree.map(np.testing.assert_array_equal, before["img"][key], after["img"][key])
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["llm"]), jax.tree.leaves(after["llm"])))
    refused = subprocess.run([sys.executable, "bench/reading_curve.py", str(ckpt), "--freeze", "img_tower",
                              "--img-tower-lr-mult", "0.1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "--img-tower-lr-mult 0.1: expected a tower that trains, got --freeze img_tower" in refused.stderr


@pytest.mark.parametrize("reader", ["cnn", "vit"])
def test_legibility_probe_reads_release_format_pages(tmp_path, reader):
    from tasks.registry import get_task

    get_task("docvqa").write_demo(tmp_path / "docvqa", num_train=12, num_eval=2, seed=0)
    out = run("bench/legibility_probe.py", "--data", str(tmp_path / "docvqa"), "--steps", "2",
              "--resolutions", "32", "--reader", reader)
    lines = out.splitlines()
    assert lines[0].startswith(f"reader: {reader}; ") and "title: " in lines[0]
    assert lines[2].split()[0] == "majority" and lines[3].split()[:2] == ["32", "px"]
    # an accuracy per label; nan for a field kind that no test page of this tiny sample has
    assert all(v == "nan" or 0.0 <= float(v) <= 1.0 for v in lines[3].split()[2:-2])


def test_legibility_probe_starts_from_a_stage0_encoder(tmp_path):
    """`--init` loads a stage-0 encoder written at another resolution (its position embedding resampled)."""
    from harness.pretrain_encoder import EncoderClassifier, save_encoder
    from tasks.registry import get_task

    config = config_for("nano-s", 64)
    img = EncoderClassifier(config.vision, 16).init(jax.random.key(0), np.zeros((1, 64, 64, 3)))["params"]["img"]
    save_encoder(tmp_path / "encoder-64.npz", img)
    get_task("docvqa").write_demo(tmp_path / "docvqa", num_train=12, num_eval=2, seed=0)
    out = run("bench/legibility_probe.py", "--data", str(tmp_path / "docvqa"), "--steps", "2",
              "--resolutions", "32", "--reader", "vit", "--init", str(tmp_path / "encoder-64.npz"))
    assert out.splitlines()[0].startswith(f"reader: vit from {tmp_path / 'encoder-64.npz'}; ")
    done = subprocess.run([sys.executable, "bench/legibility_probe.py", "--init", "x.npz"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--init: expected --reader vit" in done.stderr


def test_findings_probe_reads_back_every_finding_the_generator_wrote():
    """bench/findings_probe.py's labels are the generator's findings, whatever phrasing it drew."""
    import random

    from bench.findings_probe import labels_of
    from tasks.demo.mimic_cxr import findings_text, impression_text, sample_findings

    rng = random.Random(0)
    for _ in range(300):
        f = sample_findings(rng)
        with_findings = labels_of(findings_text(f, rng) + " " + impression_text(f, rng))
        impression_only = labels_of(impression_text(f, rng))
        for got in (with_findings, impression_only):
            assert got["cardiomegaly"] == (f.cardiomegaly or "none")
            assert got["effusion"] == (" ".join(f.effusion[::-1]) if f.effusion else "none")  # size, side
            assert got["opacity"] == (f.opacity.rsplit(" ", 1)[0] if f.opacity else "none")
            assert got["pneumothorax"] == (f.pneumothorax or "none")
        assert with_findings["view"] == {"PA": "pa and lateral", "AP": "portable ap"}[f.view]
        assert impression_only["view"] is None  # not said: left out of the view's accuracy


def test_findings_probe_runs_on_mimic_cxr_jpg_data_with_the_tower_frozen(tmp_path):
    """`--frozen` trains only what the VLM stages train on top of the shipped tower."""
    from bench.legibility_probe import frozen_tower_labels
    from harness.pretrain_encoder import EncoderClassifier, save_encoder
    from tasks.registry import get_task

    config = config_for("nano-s", 64)
    img = EncoderClassifier(config.vision, 16).init(jax.random.key(0), np.zeros((1, 64, 64, 3)))["params"]["img"]
    save_encoder(tmp_path / "encoder-64.npz", img)
    labels = frozen_tower_labels({"params": {"img": {"head": {"kernel": 0}, "embedding": {"kernel": 0}},
                                             "Dense_0": {"kernel": 0}}})["params"]
    assert labels == {"img": {"head": {"kernel": "train"}, "embedding": {"kernel": "frozen"}},
                      "Dense_0": {"kernel": "train"}}
    get_task("mimic_cxr").write_demo(tmp_path / "mimic", num_train=12, num_eval=2, seed=0)
    out = run("bench/findings_probe.py", "--data", str(tmp_path / "mimic"), "--steps", "2", "--resolutions",
              "32", "--reader", "vit", "--init", str(tmp_path / "encoder-64.npz"), "--frozen")
    lines = out.splitlines()
    assert lines[0].startswith("reader: vit from ") and lines[0].split("; ")[0].endswith(", tower frozen")
    assert lines[1].split() == ["px", "view", "cardiomegaly", "effusion", "opacity", "pneumothorax"]
    assert lines[2].split()[0] == "majority" and lines[3].split()[:2] == ["32", "px"]
    assert all(v == "nan" or 0.0 <= float(v) <= 1.0 for v in lines[3].split()[2:-2])
    done = subprocess.run([sys.executable, "bench/findings_probe.py", "--frozen"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--frozen: expected --init" in done.stderr


@pytest.mark.parametrize("pool", ["attn", "mean"])
def test_vit_reader_pools_read_any_number_of_tokens(pool):
    """`--pool attn/mean` heads do not grow with the token count (flat ones do): one reader's weights fit 16
    and 64 tokens, as one VLM's attention reads 32 and 64 px; under `--frozen` only the tower is fixed."""
    from bench.legibility_probe import ViTReader, frozen_tower_labels

    shapes = {}
    for px in (32, 64):
        params = ViTReader((3, 5), pool=pool).init(jax.random.key(0), np.zeros((1, px, px, 3)))
        shapes[px] = jax.tree.map(np.shape, {k: v for k, v in params["params"].items() if k != "img"})
        labels = frozen_tower_labels(params)["params"]
        assert set(jax.tree.leaves({k: v for k, v in labels.items() if k != "img"})) == {"train"}
        assert set(jax.tree.leaves({k: v for k, v in labels["img"].items() if k != "head"})) == {"frozen"}
    assert shapes[32] == shapes[64]
    flat = [ViTReader((3,)).init(jax.random.key(0), np.zeros((1, px, px, 3)))["params"]["Dense_0"]["kernel"].shape
            for px in (32, 64)]
    assert flat[0][0] * 4 == flat[1][0]


def test_findings_probe_attention_pool_and_its_one_line_error(tmp_path):
    from harness.pretrain_encoder import EncoderClassifier, save_encoder
    from tasks.registry import get_task

    config = config_for("nano-s", 64)
    img = EncoderClassifier(config.vision, 16).init(jax.random.key(0), np.zeros((1, 64, 64, 3)))["params"]["img"]
    save_encoder(tmp_path / "encoder-64.npz", img)
    get_task("mimic_cxr").write_demo(tmp_path / "mimic", num_train=12, num_eval=2, seed=0)
    out = run("bench/findings_probe.py", "--data", str(tmp_path / "mimic"), "--steps", "2", "--resolutions",
              "32", "--reader", "vit", "--init", str(tmp_path / "encoder-64.npz"), "--frozen", "--pool", "attn")
    lines = out.splitlines()
    assert lines[0].split("; ")[0].endswith(", tower frozen, attn pool")
    assert lines[3].split()[:2] == ["32", "px"]
    done = subprocess.run([sys.executable, "bench/findings_probe.py", "--pool", "attn"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--pool attn: expected --reader vit" in done.stderr


def test_localisation_probe_splits_the_icdar_gap_by_token_kind(tmp_path):
    """bench/localisation_probe.py trains a checkpoint on ICDAR'15 alone, then prints the image gap of every
    target token, the loc tokens, the first corner and the text, each the mean of its tokens."""
    out = run("bench/localisation_probe.py", "random:nano-s-32", "--grid", str(tiny_grid(tmp_path)), "--steps", "2",
              "--train-data", str(tmp_path / "data" / "icdar15"), "--loc-init", "sinusoidal", "--num-eval", "3")
    assert re.match(r"trained 2 steps on [34] scenes", out)  # a scene without a legible word is dropped
    rows = {line[:14].strip(): line[14:].split() for line in out.splitlines()[2:]}
    assert set(rows) == {"all", "loc", "first corner", "text"}
    for right, shuffled, gap, _ in rows.values():
        assert abs(float(shuffled) - float(right) - float(gap)) < 2e-3
    assert int(rows["loc"][3]) + int(rows["text"][3]) == int(rows["all"][3])
    assert int(rows["first corner"][3]) == 2 * 3  # one y and one x per scene with a legible word


def test_sinusoidal_loc_rows_make_neighbouring_bins_alike():
    from bench.localisation_probe import sinusoidal_rows

    rows = sinusoidal_rows(1024, 128, 1.5)
    assert rows.shape == (1024, 128) and np.allclose(np.linalg.norm(rows, axis=1), 1.5, atol=1e-5)
    cos = lambda a, b: float(rows[a] @ rows[b]) / 1.5 ** 2  # noqa: E731
    assert cos(500, 501) > cos(500, 520) > cos(500, 900)


def test_localisation_probe_scores_pubtabnet_boxes_without_training(tmp_path):
    grid = str(tiny_grid(tmp_path))
    out = run("bench/localisation_probe.py", "random:nano-s-32", "--grid", grid, "--task", "pubtabnet",
              "--steps", "0", "--num-eval", "3")
    assert "trained" not in out and "pubtabnet eval examples" in out
    kinds = [line[:14].strip() for line in out.splitlines()[1:]]
    assert kinds[:4] == ["all", "loc", "first corner", "text"] and set(kinds[4:]) <= {"cell words", "markup"}
    assert "markup" in kinds
    refused = subprocess.run([sys.executable, "bench/localisation_probe.py", "random:nano-s-32", "--grid", grid],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--train-data is needed" in refused.stderr


def test_pubtabnet_cell_words_are_the_tables_cell_texts(tmp_path):
    """cell_text_tokens picks exactly the tokens whose characters (sentencepiece's own offsets) overlap a
    cell's text as the release JSONL lists it (`html.cells[].tokens`), found in order in the target."""
    import json

    from bench.localisation_probe import cell_text_tokens
    from model.tokenizer import Tokenizer
    from tasks.registry import get_task

    get_task("pubtabnet").write_demo(tmp_path / "ptn", num_train=2, num_eval=20, seed=3)
    tokenizer = Tokenizer(ROOT / "model/assets/nano_tokenizer.model")
    examples = get_task("pubtabnet").examples(tmp_path / "ptn", "eval")
    records = [json.loads(line) for line in (tmp_path / "ptn/PubTabNet_2.0.0.jsonl").read_text().splitlines()]
    cells = {r["filename"]: ["".join(t for t in c["tokens"] if t not in ("<b>", "</b>"))
                             for c in r["html"]["cells"] if c["tokens"]] for r in records}
    straddling = 0
    for i in range(len(examples)):
        target = examples[i].targets[0]
        chars = np.zeros(len(target), bool)
        cursor = 0
        for text in cells[examples[i].id]:
            at = target.index(f">{text}<", cursor) + 1
            chars[at:at + len(text)] = True
            cursor = at + len(text)
        proto = tokenizer._sp.encode(target, return_type="proto")
        expected = np.array([chars[p.begin:p.end].any() for p in proto.pieces])
        ids = np.array([p.id for p in proto.pieces])
        assert ids.tolist() == tokenizer.encode(target)
        np.testing.assert_array_equal(cell_text_tokens(ids, tokenizer), expected, err_msg=target)
        straddling += sum(chars[p.begin:p.end].any() and not chars[p.begin:p.end].all() for p in proto.pieces)
    assert straddling  # e.g. '%</': a word's last character and the closing tag's start are one token


def test_detect_probe_scenes_box_their_shape():
    """Each scene's target is the shape's box as four loc tokens (y0 x0 y1 x1 of the 256 px scene) and its
    name; a square fills its box and a circle its box's centre, in one colour."""
    from bench.detect_probe import SCENE_PX, SHAPES, scene
    from model.tokenizer import parse_loc_tokens

    rng = np.random.default_rng(0)
    for _ in range(20):
        image, target = scene(rng)
        assert image.shape == (SCENE_PX, SCENE_PX, 3)
        bins, name = parse_loc_tokens(target), target.split()[-1]
        assert len(bins) == 4 and name in SHAPES
        y0, x0, y1, x1 = (round(b / 1023 * SCENE_PX) for b in bins)
        assert 40 <= y1 - y0 <= 101 and 40 <= x1 - x0 <= 101
        cy, cx, q = (y0 + y1) // 2, (x0 + x1) // 2, (y1 - y0) // 4
        inner = image[y0 + 3:y1 - 3, x0 + 3:x1 - 3] if name == "square" else image[cy - q:cy + q, cx - q:cx + q]
        if name != "triangle":  # a solid fill in the shape's colour
            assert (inner == image[cy, cx]).all()


def test_detect_probe_trains_and_splits_the_gap(tmp_path):
    out = run("bench/detect_probe.py", "random:nano-s-32", "--steps", "2", "--num-eval", "4")
    assert out.startswith("nano-s-32: 2 steps, tower trained")
    rows = {line[:14].strip(): line[14:].split() for line in out.splitlines()[2:6]}
    assert set(rows) == {"all", "loc", "first corner", "text"}
    assert int(rows["loc"][3]) == 4 * 4 and int(rows["first corner"][3]) == 2 * 4
