"""The grid's `mesh:` field: parsed per task, validated with one-line errors, not part of a cell's
identity; and a cell run on a 4-device (2, 2) mesh records the same numbers as on one device."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from harness.cell.mesh import resolve_mesh
from harness.run.grid import GridError, load_grid
from model.config import get_config

ROOT = Path(__file__).resolve().parents[1]

GRID = """\
name: g
tasks: [vqav2, docvqa]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
checkpoints: random
overrides:
  all: {batch_size: 4}
"""


def _load(tmp_path, extra: str):
    path = tmp_path / "g.yaml"
    path.write_text(GRID + extra)
    return load_grid(path)


def test_mesh_forms_and_per_task_requests(tmp_path):
    assert {c.task: c.mesh for c in _load(tmp_path, "").final_cells({("vqav2", "nano-s"): 1e-3,
                                                                     ("docvqa", "nano-s"): 1e-3})} == {
        "vqav2": None, "docvqa": None}
    grid = _load(tmp_path, "mesh: {model_parallel: 2}\n")
    assert grid.mesh == {"vqav2": {"model_parallel": 2}, "docvqa": {"model_parallel": 2}}
    grid = _load(tmp_path, "mesh: {all: auto, docvqa: {data: 2, model: 4}}\n")
    assert grid.mesh == {"vqav2": "auto", "docvqa": {"data": 2, "model": 4}}


def test_mesh_is_not_part_of_the_cell_identity(tmp_path):
    plain = _load(tmp_path, "").final_cells({("vqav2", "nano-s"): 1e-3, ("docvqa", "nano-s"): 1e-3})
    meshed = _load(tmp_path, "mesh: {model_parallel: 4}\n").final_cells(
        {("vqav2", "nano-s"): 1e-3, ("docvqa", "nano-s"): 1e-3})
    assert [c.cell_id for c in plain] == [c.cell_id for c in meshed]
    assert plain == meshed and meshed[0].mesh == {"model_parallel": 4}


@pytest.mark.parametrize("extra, expected", [
    ("mesh: {model_parallel: 0}\n", r"g.yaml:9: mesh.model_parallel: expected an integer >= 1, got 0"),
    ("mesh: {modle: 2}\n", r"g.yaml:9: mesh.modle: unknown field \(did you mean 'model'\?\)"),
    ("mesh: {model_parallel: 2, data: 2}\n", r"g.yaml:9: mesh: give either model_parallel or data/model"),
    ("mesh: {all: {data: 3}}\n", r"g.yaml:9: mesh.all.data: data axis 3 does not split vqav2's batch size 4"),
    ("mesh: {vqav2: auto, coco: auto}\n", r"g.yaml:9: mesh.coco: unknown field"),
    ("mesh: sometimes\n", r"g.yaml:9: mesh: expected a mapping, got str"),
])
def test_bad_mesh_is_one_line_naming_file_line_and_field(tmp_path, extra, expected):
    with pytest.raises(GridError, match=expected) as err:
        _load(tmp_path, extra)
    assert "\n" not in str(err.value)


def test_resolve_mesh_checks_devices_and_batch():
    config = get_config("nano-s-32")
    one = jax.devices()[:1]
    mesh = resolve_mesh(None, config, text_len=16, batch_size=4, devices=one)
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    assert dict(resolve_mesh("auto", config, text_len=16, batch_size=4, devices=one).shape) == {"data": 1, "model": 1}
    with pytest.raises(ValueError, match=r"mesh data=2 x model=4 does not cover the 1 device"):
        resolve_mesh({"data": 2, "model": 4}, config, text_len=16, batch_size=4, devices=one)
    with pytest.raises(ValueError, match=r"data axis of 4, which does not split the batch size 6"):
        resolve_mesh({"model_parallel": 1}, config, text_len=16, batch_size=6, devices=one * 4)


CELL_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from harness.run.grid import load_grid
    from harness.run.scheduler import run_grid
    records = run_grid(load_grid(sys.argv[1]), Path(sys.argv[2]), progress=False)
    print(json.dumps([r.__dict__ for r in records], default=str))
""")


@pytest.mark.slow
def test_cell_on_a_mesh_records_the_same_numbers(tmp_path):
    tok = ROOT / "model" / "assets" / "nano_tokenizer.model"
    body = textwrap.dedent(f"""
        name: m
        demo: {{num_train: 8, num_eval: 6, seed: 5}}
        tasks: [vqav2]
        sizes: [nano-s]
        resolutions: [32]
        lrs: [1.0e-3]
        data_root: {tmp_path / 'data'}
        checkpoints: random
        overrides:
          all: {{steps: 3, batch_size: 4, text_len: 24, max_decode_len: 4, eval_batch_size: 6, tokenizer: {tok}}}
    """)
    runs = {}
    for name, devices, mesh in (("one", 1, ""), ("2x2", 4, "mesh: {model_parallel: 2}\n")):
        (tmp_path / f"{name}.yaml").write_text(body + mesh)
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                   TQDM_DISABLE="1")
        run = subprocess.run([sys.executable, "-c", CELL_SCRIPT, str(tmp_path / f"{name}.yaml"), str(tmp_path / name)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        (runs[name],) = json.loads(run.stdout.strip().splitlines()[-1])
    one, sharded = runs["one"], runs["2x2"]
    assert one["cell_id"] == sharded["cell_id"]
    assert one["extra"]["mesh"]["devices"] == 1
    assert {k: sharded["extra"]["mesh"][k] for k in ("data", "model", "devices")} == {
        "data": 2, "model": 2, "devices": 4}
    assert one["metrics"] == pytest.approx(sharded["metrics"], abs=1e-6)
    assert one["extra"]["train"]["final_loss"] == pytest.approx(sharded["extra"]["train"]["final_loss"], abs=1e-5)
    preds = [(tmp_path / n / "predictions" / f"{one['cell_id']}.jsonl").read_text() for n in ("one", "2x2")]
    assert preds[0] == preds[1]
