"""Two processes on localhost, 4 fake CPU devices each, form one 8-device job (jax.distributed, CPU
collectives over gloo) and train on a (4, 2) mesh that spans both: each process loads only its rows
of every global batch (sharding.process_rows + make_array_from_process_local_data). The params after
the steps, and greedy tokens decoded on the same mesh, must equal a single-device run of the same
code in the same process (the reference no collective touches).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.two_processes import run_two

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from model.sharding import batch_sharding, initialize_distributed, local_mesh, make_mesh, process_rows
    from harness.cell.train import TrainConfig, train

    assert initialize_distributed()
    from jax.experimental import multihost_utils
    from model.decode import generate
    from model.paligemma import init_params
    from model.testing import tiny_config

    config = tiny_config()
    steps, b, t = 3, 8, 12
    rng = np.random.default_rng(0)  # every process draws the same global batches
    batches = []
    for _ in range(steps):
        batches.append(dict(image=rng.uniform(-1, 1, (b, 16, 16, 3)).astype(np.float32),
                            text=rng.integers(2, 300, (b, t)).astype(np.int32),
                            mask_ar=(np.arange(t) >= 5).astype(np.int32)[None].repeat(b, 0),
                            mask_loss=(np.arange(t) >= 5).astype(np.int32)[None].repeat(b, 0),
                            mask_input=np.ones((b, t), np.int32)))
    host_params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    cfg = TrainConfig(lr=1e-3, num_steps=steps, dropout=0.1, seed=3)

    mesh = make_mesh(2)  # (data 4, model 2) over both processes' devices
    rows = process_rows(batch_sharding(mesh), b)
    local = [{k: v[rows] for k, v in batch.items()} for batch in batches]
    params, summary = train(config, host_params, local, cfg, progress=False, mesh=mesh)
    gathered = multihost_utils.process_allgather(params, tiled=True)
    ref, ref_summary = train(config, host_params, batches, cfg, progress=False, mesh=local_mesh())

    prompts = (rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32), rng.integers(2, 300, (4, 6)).astype(np.int32),
               np.zeros((4, 6), np.int32), np.ones((4, 6), bool))
    toks = generate(config, params, *prompts, max_decode_len=5, eos_id=1, mesh=mesh)
    ref_toks = generate(config, ref, *prompts, max_decode_len=5, eos_id=1)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(r))))
               for a, r in zip(jax.tree.leaves(gathered), jax.tree.leaves(ref)))
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                      "rows": [rows.start, rows.stop], "param_diff": diff,
                      "loss_diff": abs(summary["final_loss"] - ref_summary["final_loss"]),
                      "tokens_equal": toks.tolist() == ref_toks.tolist()}))
""")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    logs = tmp_path_factory.mktemp("multihost")
    codes = run_two([sys.executable, "-c", SCRIPT], logs, devices=4, timeout=900)
    for i, code in enumerate(codes):
        assert code == 0, (logs / f"err{i}").read_text()[-3000:]
    return [json.loads((logs / f"out{i}").read_text().strip().splitlines()[-1]) for i in range(2)]


@pytest.mark.slow
def test_two_processes_train_and_decode_like_one_device(two_processes):
    assert [r["process"] for r in two_processes] == [0, 1]
    for r in two_processes:
        assert (r["processes"], r["devices"], r["local_devices"]) == (2, 8, 4)
        assert r["param_diff"] <= 1e-5 and r["loss_diff"] <= 1e-5, r
        assert r["tokens_equal"]
    # Each process fed its own half of every global batch.
    assert sorted(tuple(r["rows"]) for r in two_processes) == [(0, 4), (4, 8)]


GRID = """\
name: mh
demo: {{num_train: 8, num_eval: 6, seed: 5}}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3, 3.0e-3]
data_root: {data}
checkpoints: random
mesh: {mesh}
keep_checkpoints: params
runner: tests.helpers.interleaved_runner:run
overrides:
  all: {{steps: 2, batch_size: 4, text_len: 24, max_decode_len: 4, eval_batch_size: 4, tokenizer: {tok}}}
"""
# (mesh field, axes in the record, the rows of a batch of 4 each process feeds). The runner lays the
# mesh's devices out alternating between the processes: on (4, 1) each process's rows are not one range
# (as on a TPU pod); on (2, 2) every model group spans both processes.
LAYOUTS = {"4x1 interleaved": ("{data: 4, model: 1}", (4, 1), [[0, 2], [1, 3]]),
           "2x2 across hosts": ("{model_parallel: 2}", (2, 2), [[0, 1, 2, 3], [0, 1, 2, 3]])}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_grid_run_on_two_processes_writes_each_record_once(tmp_path, layout):
    """`paligemma-transfer run` started on both processes: process 0 takes the locks and writes; the
    sweep's 2 cells and the final cell each get one record, train, decode and keep their params across
    both processes, and equal the same grid on one device."""
    mesh, (data, model), fed = LAYOUTS[layout]
    grid = tmp_path / "mh.yaml"
    grid.write_text(GRID.format(data=tmp_path / "data", mesh=mesh,
                                tok=ROOT / "model" / "assets" / "nano_tokenizer.model"))
    codes = run_two([sys.executable, "-m", "harness.cli", "run", str(grid), "--workdir", str(tmp_path / "out"),
                     "--quiet"], tmp_path, devices=2, timeout=1200,
                    per_process={"PALIGEMMA_TRANSFER_CACHE": str(tmp_path / "cache")})
    for i, code in enumerate(codes):
        assert code == 0, (tmp_path / f"err{i}").read_text()[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "records").glob("*.json")]
    assert sorted(r["phase"] for r in records) == ["final", "sweep", "sweep"]
    for r in records:
        assert {k: r["extra"]["mesh"][k] for k in ("data", "model", "devices", "processes")} == {
            "data": data, "model": model, "devices": 4, "processes": 2}
        cell = tmp_path / "out" / "cells" / r["cell_id"]
        assert [json.loads((cell / f"rows-{i}.json").read_text()) for i in range(2)] == fed
        assert (tmp_path / "out" / "predictions" / f"{r['cell_id']}.jsonl").exists()
        # Kept params: each process wrote its own shards into one orbax folder (no gather onto a host).
        assert (cell / "params").is_dir()
    assert (tmp_path / "out" / "best_lr.json").exists()

    # The same grid on one device (no `mesh:`: the mesh is not part of a cell's id) writes the same cells
    # with the same metrics and predictions.
    one = tmp_path / "one.yaml"
    one.write_text(grid.read_text().replace(f"mesh: {mesh}\n", ""))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PALIGEMMA_TRANSFER_CACHE=str(tmp_path / "cache-one"))
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(one), "--workdir", str(tmp_path / "one"),
                           "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    single = {json.loads(p.read_text())["cell_id"]: json.loads(p.read_text())
              for p in (tmp_path / "one" / "records").glob("*.json")}
    assert set(single) == {r["cell_id"] for r in records}
    for r in records:
        assert single[r["cell_id"]]["extra"]["mesh"]["devices"] == 1
        assert single[r["cell_id"]]["metrics"] == pytest.approx(r["metrics"], abs=1e-6)
        mine = (tmp_path / "out" / "predictions" / f"{r['cell_id']}.jsonl").read_text()
        assert (tmp_path / "one" / "predictions" / f"{r['cell_id']}.jsonl").read_text() == mine
