"""Base checkpoints read per host: checkpoint.load_sharded places each parameter by the partition rules,
reading only the slices each device holds, and must equal the plain load placed the same way."""

from __future__ import annotations

import textwrap
import zipfile

import numpy as np
import pytest

from model import checkpoint
from tests.helpers.fake_devices import run_on_fake_devices


def test_members_are_found_in_place_and_read_by_slices(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(7, 5, 6)).astype(np.float32), "s": np.float32(3.5),
              "b": rng.normal(size=(4, 3)).astype(np.float32).astype(checkpoint.ml_dtypes.bfloat16)}
    path = str(tmp_path / "x.npz")
    np.savez(path, **arrays)
    members = checkpoint.npz_members(path)
    assert {k: m.shape for k, m in members.items()} == {"a": (7, 5, 6), "s": (), "b": (4, 3)}
    index = (slice(1, 6), slice(None), slice(2, 4))
    for chunk in (1, 13 * 4, 64 << 20):  # one row per chunk, a partial row count, everything at once
        np.testing.assert_array_equal(checkpoint.read_member(members["a"], index, chunk_bytes=chunk),
                                      arrays["a"][index])
    assert checkpoint.read_member(members["s"]) == 3.5
    got = checkpoint.read_member(members["b"], (slice(2, 4),), np.float32)
    np.testing.assert_array_equal(got, arrays["b"][2:4].astype(np.float32))
    packed = str(tmp_path / "z.npz")
    np.savez_compressed(packed, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match=r"z.npz: member 'a.npy' is compressed"):
        checkpoint.npz_members(packed)
    assert zipfile.is_zipfile(path)


SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, ml_dtypes
    from model import checkpoint
    from model.config import get_config
    from model.paligemma import init_params, param_shapes
    from model.sharding import make_mesh, param_shardings, place

    config = get_config("nano-s-32")
    params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    # Released checkpoints are bfloat16: store half the tree so, the rest float32.
    flat = checkpoint.flatten(params)
    flat = {k: (v.astype(ml_dtypes.bfloat16) if i % 2 else v) for i, (k, v) in enumerate(sorted(flat.items()))}
    path = sys.argv[1]
    checkpoint.save_npz(path, checkpoint.unflatten(flat))
    _, plain = checkpoint.load(path, config_name=config.name, dtype=np.float32)
    out = {"devices": jax.device_count()}
    for name, mp in (("8x1", 1), ("4x2", 2)):
        shardings = param_shardings(param_shapes(config), make_mesh(mp))
        got = checkpoint.load_sharded(path, config, shardings)
        want = place(plain, shardings)
        same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))) and a.dtype == b.dtype
                            and a.sharding == b.sharding, got, want)
        out[name] = all(jax.tree.leaves(same))
        out[name + "/split"] = sum(1 for x in jax.tree.leaves(got) if not x.sharding.is_fully_replicated)
    print(json.dumps(out))
""")


def test_sharded_load_equals_the_plain_load_on_eight_devices(tmp_path):
    script = SCRIPT.replace("sys.argv[1]", repr(str(tmp_path / "base.npz")))
    out = run_on_fake_devices(script, 8, timeout=600)
    assert out["devices"] == 8 and out["8x1"] and out["4x2"], out
    assert out["8x1/split"] > 10 and out["4x2/split"] > 10


@pytest.mark.slow
def test_two_hosts_each_hold_about_half_of_what_one_whole_load_holds():
    """bench/checkpoint_rss.py at ~230 MB: each of 2 processes loading its half onto a (2, 1) mesh grows
    by about half of what one process loading the whole file grows by (1 GB measured: 0.48)."""
    from bench.checkpoint_rss import measure

    out = measure(230, timeout=600)
    assert out["growth_ratio"] < 0.7, out
    assert out["peak_ratio"] < 1.0, out
