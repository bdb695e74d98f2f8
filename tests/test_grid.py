"""Grid files -> cells: expansion, stable ids, the lr protocol, and one-line errors for bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest

from harness.run.grid import GridError, load_grid
from model import checkpoint
from results.lr_choice import select_best_lrs

REPO = Path(__file__).resolve().parents[1]

GRID = """\
name: unit
demo: true
tasks: [vqav2, docvqa]
sizes: [nano-s, nano-m]
resolutions: [32, 64, 128]
lrs:
  default: [1.0e-4, 3e-4, 1.0e-3]
  docvqa: [3.0e-4]
protocol:
  final: {seeds: 3, resolutions: [32, 64]}
data_root: DATA
checkpoints: random
overrides:
  all: {steps: 10, batch_size: 4}
  docvqa: {steps: 20, text_len: 64}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text.replace("DATA", str(tmp_path / "data")))
    return path


def test_a_size_block_sets_that_sizes_lrs(tmp_path):
    """The protocol picks an lr per (task, size); a grid that fixes them says so per size."""
    text = GRID.replace("  docvqa: [3.0e-4]\n", "  docvqa: [3.0e-4]\n  nano-m: {default: [1.0e-4], docvqa: [3.0e-5]}\n")
    grid = load_grid(write(tmp_path, text))
    assert grid.lrs["vqav2", "nano-s"] == (1e-4, 3e-4, 1e-3) and grid.lrs["docvqa", "nano-s"] == (3e-4,)
    assert grid.lrs["vqav2", "nano-m"] == (1e-4,) and grid.lrs["docvqa", "nano-m"] == (3e-5,)
    assert {(c.task, c.size) for c in grid.sweep_cells()} == {("vqav2", "nano-s")}
    assert grid.fixed_lrs() == {("docvqa", "nano-s"): 3e-4, ("vqav2", "nano-m"): 1e-4, ("docvqa", "nano-m"): 3e-5}


def test_expansion_counts_defaults_and_overrides(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    sweep = grid.sweep_cells()
    # Only vqav2 sweeps (docvqa has one lr): 2 sizes x 3 lrs, at the lowest resolution, minival, seed 0.
    assert len(sweep) == 6
    assert {(c.task, c.resolution, c.split, c.seed, c.phase) for c in sweep} == {(
        "vqav2", 32, "minival", 0, "sweep")}
    assert sorted({c.lr for c in sweep}) == [1e-4, 3e-4, 1e-3]
    # Final: 2 tasks x 2 sizes x 2 final resolutions x 3 seeds.
    assert len(grid.final_plan()) == 24
    assert grid.fixed_lrs() == {("docvqa", "nano-s"): 3e-4, ("docvqa", "nano-m"): 3e-4}
    best = {**grid.fixed_lrs(), ("vqav2", "nano-s"): 1e-3, ("vqav2", "nano-m"): 1e-4}
    final = grid.final_cells(best)
    assert len(final) == 24
    assert {c.split for c in final} == {"eval"} and {c.seed for c in final} == {0, 1, 2}
    assert {c.resolution for c in final} == {32, 64}
    assert {c.lr for c in final if c.task == "vqav2" and c.size == "nano-m"} == {1e-4}
    # Only pairs with a known lr get final cells.
    assert len(grid.final_cells(grid.fixed_lrs())) == 12
    vqa, doc = final[0], [c for c in final if c.task == "docvqa"][0]
    assert dict(vqa.overrides) == {"steps": 10, "batch_size": 4}
    assert dict(doc.overrides) == {"steps": 20, "batch_size": 4, "text_len": 64}
    assert doc.data_dir == str(tmp_path / "data" / "docvqa") and doc.checkpoint == "random" and doc.demo
    assert grid.runner == "harness.cell.run_cell:run_cell"


def test_ids_are_readable_unique_and_stable(tmp_path):
    a = load_grid(write(tmp_path, GRID))
    ids = [c.cell_id for c in a.sweep_cells() + a.final_cells({**a.fixed_lrs(), ("vqav2", "nano-s"): 1e-3,
                                                                ("vqav2", "nano-m"): 1e-3})]
    assert len(set(ids)) == len(ids)
    assert ids[0] == f"vqav2-nano-s-32-lr1e-04-s0-{a.sweep_cells()[0].config_hash}"
    assert all(re.fullmatch(r"[a-z0-9_]+-nano-[sm]-\d+-lr\de-0\d-s\d-[0-9a-f]{8}", i) for i in ids)
    # Same grid, reformatted (comments, key order, flow style) -> same ids.
    reordered = "# a comment\n" + "\n".join(reversed(GRID.strip().splitlines()[:5])) + "\n" + \
        "\n".join(GRID.strip().splitlines()[5:]) + "\n"
    b = load_grid(write(tmp_path, reordered))
    assert [c.cell_id for c in b.sweep_cells()] == [c.cell_id for c in a.sweep_cells()]
    # The demo flag labels outputs only: it does not change ids.
    d = load_grid(write(tmp_path, GRID.replace("demo: true", "demo: false")))
    assert [c.cell_id for c in d.sweep_cells()] == [c.cell_id for c in a.sweep_cells()]
    # A changed override changes the hash of exactly the cells it applies to.
    c = load_grid(write(tmp_path, GRID.replace("docvqa: {steps: 20", "docvqa: {steps: 21")))
    best = {**a.fixed_lrs(), ("vqav2", "nano-s"): 1e-3, ("vqav2", "nano-m"): 1e-3}
    for old, new in zip(a.final_cells(best), c.final_cells(best)):
        assert (old.cell_id == new.cell_id) == (old.task == "vqav2")


def test_paper_grid_is_the_papers():
    grid = load_grid(REPO / "configs" / "grids" / "paper.yaml", check_files=False)
    assert grid.tasks == ("vqav2", "docvqa", "coco_captions", "pubtabnet", "chemdraw", "mimic_cxr", "icdar15")
    assert grid.sizes == ("3b", "10b", "28b") and grid.resolutions == (224, 448, 896)
    assert grid.lrs["vqav2", "10b"] == (3e-7, 6e-7, 1e-6, 3e-6, 6e-6, 1e-5, 3e-5)  # facts §3.2 protocol
    assert grid.protocol.sweep_resolution == 224 and grid.protocol.final_seeds == (0, 1, 2, 3, 4)
    assert grid.checkpoint("10b", 448) == "checkpoints/paligemma2-10b-pt-448.b16.npz"
    assert not grid.demo
    # Every task sweeps its plugin's lr_grid where the paper swept it (docs/fidelity.yaml): the PaliGemma 1
    # tasks 7 lrs at 224 px; ICDAR'15 and PubTabNet 5 lrs at 896 px; MIMIC-CXR 6 lrs at every resolution;
    # ChemDraw has one lr. x 3 sizes; 7 x 3 x 3 x 5 final.
    assert len(grid.sweep_cells()) == 3 * 7 * 3 + 2 * 5 * 3 + 6 * 3 * 3 and len(grid.final_plan()) == 315
    assert grid.sweep_resolution("icdar15", "3b", 224) == 896 and grid.sweep_resolution("vqav2", "3b", 896) == 224
    assert [grid.sweep_resolution("mimic_cxr", "10b", r) for r in (224, 448, 896)] == [224, 448, 896]
    assert 5e-6 in grid.lrs["mimic_cxr", "3b"] and grid.lrs["chemdraw", "3b"] == (1e-4,)


def test_demo_grid_starts_from_the_shipped_nano_checkpoints(monkeypatch):
    monkeypatch.chdir(REPO)  # grid paths are relative to where `paligemma-transfer run` is started
    grid = load_grid(REPO / "configs" / "grids" / "demo.yaml")  # checks that every base checkpoint exists
    assert grid.demo and grid.sizes == ("nano-s", "nano-m") and grid.resolutions == (32, 64)
    for size in grid.sizes:
        for res in grid.resolutions:
            path = grid.checkpoint(size, res)
            assert path == f"checkpoints/nano/{size}-{res}.npz"
            flat = checkpoint.read_npz(path)  # bfloat16 like the released files; shapes checked on load
            assert {v.dtype for v in flat.values()} == {np.dtype(ml_dtypes.bfloat16)}
            checkpoint.load_npz(path, f"{size}-{res}")


def test_demo_grids_are_the_demo_with_one_thing_changed(monkeypatch):
    """demo-seeds adds seeds and demo-sweep adds the lr sweep; everything else is the demo's, so their
    seed-0 cells at the demo's lrs have the demo's ids (a workdir that ran the demo reuses them), and the
    demo's per-task lrs are among those demo-sweep sweeps."""
    monkeypatch.chdir(REPO)
    grids = {n: load_grid(REPO / "configs" / "grids" / f"{n}.yaml", check_files=False)
             for n in ("demo", "demo-seeds", "demo-sweep")}
    demo, seeds, sweep = grids.values()
    ids = {c.cell_id for c in demo.final_cells(demo.fixed_lrs())}
    assert len(ids) == 28
    assert ids < {c.cell_id for c in seeds.final_cells(seeds.fixed_lrs())}
    assert ids == {c.cell_id for c in sweep.final_cells(demo.fixed_lrs())}
    assert all(lr in sweep.lrs[key] for key, lr in demo.fixed_lrs().items())
    # 7 tasks x 2 sizes x 4 lrs at 32 px, but where the paper swept elsewhere the plugins say so: ChemDraw at
    # 64 px (the nano family's 448), MIMIC-CXR at every resolution (+2 x 4 at 64 px each).
    assert len(sweep.sweep_cells()) == 7 * 2 * 4 + 2 * 2 * 4 - 2 * 4
    assert {c.resolution for c in sweep.sweep_cells() if c.task == "chemdraw"} == {64}


def test_demo_block_means_demo_scale_with_generated_data(tmp_path):
    grid = load_grid(write(tmp_path, GRID.replace("demo: true", "demo: {num_train: 8, num_eval: 4, seed: 1}")))
    assert grid.demo and (grid.demo_data.num_train, grid.demo_data.num_eval, grid.demo_data.seed) == (8, 4, 1)
    assert load_grid(write(tmp_path, GRID)).demo_data is None


BAD = [
    # (replace this, with this, substrings the one-line error must contain)
    ("tasks: [vqav2, docvqa]", "tasks: [vqav2, docvqa, vqa3]",
     [":3: tasks[2]: unknown task 'vqa3'", "known tasks:", "vqav2"]),
    ("sizes: [nano-s, nano-m]", "sizes: [nano-s, nano-xl]", [":4: sizes[1]:", "unknown model size 'nano-xl'"]),
    ("resolutions: [32, 64, 128]", "resolutions: [32, 48]",
     [":5: resolutions[1]:", "resolution 48 is not in the nano family", "[32, 64, 128]"]),
    ("  default: [1.0e-4, 3e-4, 1.0e-3]", "  default: []", [":7: lrs.default: empty lr list"]),
    ("lrs:\n  default: [1.0e-4, 3e-4, 1.0e-3]\n  docvqa: [3.0e-4]", "lrs: []", [":6: lrs: empty lr list"]),
    ("tasks: [vqav2, docvqa]", "tasks: [vqav2, docvqa", [":4:", "malformed YAML"]),
    ("checkpoints: random", "checkpoints: CKPT/pt-{size}-{resolution}.npz",
     [":12: checkpoints:", "pt-nano-s-32.npz does not exist"]),
    ("resolutions: [32, 64, 128]", "resolution: [32, 64, 128]",
     [":5: resolution: unknown field (did you mean 'resolutions'?)"]),
    ("  final: {seeds: 3, resolutions: [32, 64]}", "  final: {seeds: 3, resolutions: [32, 256]}",
     ["protocol.final.resolutions[1]: 256 is not one of the grid's resolutions"]),
    ("  final: {seeds: 3, resolutions: [32, 64]}", "  final: {seeds: 3, resolutions: 32}",
     ["protocol.final.resolutions: expected a non-empty list, got 32"]),
    ("  final: {seeds: 3,", "  final: {seed: 3,", ["protocol.final.seed: unknown field (did you mean 'seeds'?)"]),
    ("  docvqa: [3.0e-4]", "  docvqa: [fast]", ["lrs.docvqa[0]: expected a positive learning rate, got 'fast'"]),
    ("  docvqa: [3.0e-4]\n", "  docvqa: [3.0e-4]\n  nano-m: {docvqa: [1.0e-4], vqa: [1.0e-4]}\n",
     [":9: lrs.nano-m.vqa: unknown field (did you mean 'vqav2'?)"]),
    ("  docvqa: [3.0e-4]\n", "  docvqa: [3.0e-4]\n  nano-m: [1.0e-4]\n", ["lrs.nano-m: expected a mapping"]),
    ("  docvqa: {steps: 20, text_len: 64}", "  docvqa: {lr: 0.1}", ["overrides.docvqa.lr:", "from `lrs`"]),
    ("  docvqa: {steps: 20, text_len: 64}", "  chemdraw: {steps: 1}", ["overrides.chemdraw: unknown field"]),
    ("checkpoints: random\n", "checkpoints: random\nrunner: no_such_module:run\n",
     ["runner: module 'no_such_module' cannot be imported"]),
    ("name: unit\n", "", ["missing required field(s) name"]),
    ("name: unit\n", "name: unit\nname: other\n", [":2: name: duplicate key"]),
    ("name: unit\n", "name: my grid\n", ["name: 'my grid' must be"]),
]


@pytest.mark.parametrize("old,new,expected", BAD, ids=[b[2][0][:40] for b in BAD])
def test_bad_grid_one_line_error_naming_file_and_field(tmp_path, old, new, expected):
    assert old in GRID
    path = write(tmp_path, GRID.replace(old, new).replace("CKPT", str(tmp_path / "ckpt")))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(GridError) as info:
        load_grid(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, message
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_existing_checkpoints_pass_and_check_files_can_be_skipped(tmp_path):
    text = GRID.replace("checkpoints: random", f"checkpoints: {tmp_path}/pt-{{size}}-{{resolution}}.npz")
    with pytest.raises(GridError):
        load_grid(write(tmp_path, text))
    assert load_grid(write(tmp_path, text), check_files=False).checkpoint("nano-m", 64) == \
        f"{tmp_path}/pt-nano-m-64.npz"
    # The sweep resolution (32) and the final ones (32, 64) are needed; 128 is not.
    for size in ("nano-s", "nano-m"):
        for res in (32, 64):
            (tmp_path / f"pt-{size}-{res}.npz").write_bytes(b"")
    assert load_grid(write(tmp_path, text)).checkpoint("nano-s", 32) == f"{tmp_path}/pt-nano-s-32.npz"


def test_random_init_twin(tmp_path):
    text = GRID.replace("checkpoints: random", f"checkpoints: {tmp_path}/pt-{{size}}-{{resolution}}.npz")
    grid = load_grid(write(tmp_path, text), check_files=False)
    twin = grid.random_init_twin()
    assert twin.name == "unit-random" and "--random-init" in twin.text
    assert {c.checkpoint for c in twin.sweep_cells()} == {"random"}
    # Same cells otherwise, but never the same ids: the two grids' records cannot mix.
    pairs = list(zip(grid.sweep_cells(), twin.sweep_cells()))
    assert all((a.task, a.size, a.resolution, a.lr) == (b.task, b.size, b.resolution, b.lr) for a, b in pairs)
    assert not {a.cell_id for a, _ in pairs} & {b.cell_id for _, b in pairs}


def test_unreadable_grid_file_is_named(tmp_path):
    with pytest.raises(GridError, match=re.escape(str(tmp_path / "nope.yaml"))):
        load_grid(tmp_path / "nope.yaml")


def rec(task, size, lr, score, headline="accuracy", phase="sweep"):
    return SimpleNamespace(task=task, size=size, lr=lr, phase=phase, headline=headline,
                           metrics={headline: score})


def test_best_lr_highest_then_smaller_lr_on_ties_missing_never_wins():
    records = [
        rec("a", "s", 1e-5, 0.7), rec("a", "s", 3e-6, 0.8), rec("a", "s", 1e-6, 0.8),  # tie -> 1e-6
        rec("b", "s", 1e-6, math.nan), rec("b", "s", 1e-5, 0.1),                      # NaN never wins
        rec("c", "s", 1e-6, 0.5), rec("c", "s", 1e-6, 0.7), rec("c", "s", 1e-5, 0.55),  # seeds averaged
        rec("a", "s", 3e-5, 0.99, phase="final"),                                     # not a sweep
    ]
    best = select_best_lrs(records)
    assert best["a", "s"].lr == 1e-6
    assert best["a", "s"].scores == ((1e-6, 0.8), (3e-6, 0.8), (1e-5, 0.7))
    assert best["b", "s"].lr == 1e-5
    assert best["c", "s"].lr == 1e-6 and best["c", "s"].headline == "accuracy"
