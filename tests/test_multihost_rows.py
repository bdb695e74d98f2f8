"""Two processes (jax.distributed on localhost, 4 CPU devices each) on a mesh whose `data` axis alternates
between them, as a TPU pod's torus order spreads a host's chips: each process's rows are not one range,
and global_batch must still assemble exactly the global batch (checked by gathering it back), and a
sharded loss over it must equal the loss of the whole batch on one device."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.two_processes import run_two

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, Mesh
    from model.sharding import batch_sharding, global_batch, initialize_distributed, process_rows

    assert initialize_distributed()
    by_process = sorted(jax.devices(), key=lambda d: (d.id % 4, d.process_index))  # p0, p1, p0, p1, ...
    mesh = Mesh(np.array(by_process).reshape(8, 1), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    b = 16
    rng = np.random.default_rng(0)  # every process draws the same global batch
    batch = {"x": rng.normal(size=(b, 5)).astype(np.float32), "y": np.arange(b, dtype=np.int32)}
    rows = process_rows(batch_sharding(mesh), b)
    local = {k: v[rows] for k, v in batch.items()}
    arrays = global_batch(local, batch_sharding(mesh), b)
    back = multihost_utils.process_allgather(arrays, tiled=True)
    loss = jax.jit(lambda a: jnp.mean(jnp.sum(a["x"] ** 2, axis=1) * a["y"]))(arrays)
    ref = float(np.mean(np.sum(batch["x"] ** 2, axis=1) * batch["y"]))
    print(json.dumps({"process": jax.process_index(), "rows": np.arange(b)[rows].tolist(),
                      "equal": all(np.array_equal(back[k], batch[k]) for k in batch),
                      "loss_diff": abs(float(loss) - ref) / ref}))
""")


@pytest.mark.slow
def test_non_contiguous_rows_assemble_the_global_batch(tmp_path):
    codes = run_two([sys.executable, "-c", SCRIPT], tmp_path, devices=4, timeout=600)
    for i, code in enumerate(codes):
        assert code == 0, (tmp_path / f"err{i}").read_text()[-3000:]
    results = [json.loads((tmp_path / f"out{i}").read_text().strip().splitlines()[-1]) for i in range(2)]
    assert [r["rows"] for r in results] == [[0, 1, 4, 5, 8, 9, 12, 13], [2, 3, 6, 7, 10, 11, 14, 15]]
    for r in results:
        assert r["equal"] and r["loss_diff"] < 1e-6, r
