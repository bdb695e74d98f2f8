"""Sharded training and decoding on 8 fake CPU devices equal the single-device run.

Reference: the same `train` / `generate` on a 1x1 mesh (one device, no collectives). On meshes (8,1),
(8,1) with a minor data axis of 2 (axes (4, 2, 1)), (4,2) and (2,4) the params, optimizer state and
batch are split by model/sharding.py's rules, so every matmul and reduction is partitioned differently;
the numbers may only differ by float reassociation.
The tiny config has 2 KV heads and a 300-token vocabulary, so on 4 model devices the KV heads and on
8 data devices the vocabulary axis do not divide and those fall back to replication. A second config
with a SigLIP of width 36 and MLP 76 (no dim divides 8) trains on the minor-axis mesh, where its kernels
are split over two dims ('data' on one, 'data_minor' on another).

One subprocess runs everything (XLA reads the fake device count before jax starts). It compiles the
train step on 4 meshes and decoding on 4 meshes x 2 batch sizes x {greedy, beam}: about 3 CPU-minutes,
so it is marked slow (`pytest -m slow tests/test_sharded_train.py`); tests/test_sharding.py has a fast
(2, 2) check of the same path in the default run.
"""

import textwrap

import numpy as np
import pytest

from tests.helpers.fake_devices import run_on_fake_devices

pytestmark = pytest.mark.slow

MESHES = ("8x1", "8x1 minor 2", "4x2", "2x4")

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys, tempfile, time
    from pathlib import Path
    import jax, numpy as np
    from harness.cell.train import TrainConfig, train
    from model.decode import generate
    from model.paligemma import init_params
    from model.sharding import make_mesh
    from model.testing import tiny_config

    t0 = time.perf_counter()
    config = tiny_config()
    steps, b, t = 4, 8, 12
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps):
        text = rng.integers(2, 300, (b, t)).astype(np.int32)
        batches.append(dict(image=rng.uniform(-1, 1, (b, 16, 16, 3)).astype(np.float32), text=text,
                            mask_ar=(np.arange(t) >= 5).astype(np.int32)[None].repeat(b, 0),
                            mask_loss=(np.arange(t) >= 5).astype(np.int32)[None].repeat(b, 0),
                            mask_input=(np.arange(t)[None] < rng.integers(8, t + 1, (b, 1))).astype(np.int32)))
    host_params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    cfg = TrainConfig(lr=1e-3, num_steps=steps, dropout=0.1, weight_decay=1e-4, label_smoothing=0.1, seed=3)
    out = {}

    def run(mesh, workdir=None, **kw):
        params, summary = train(config, host_params, batches, cfg, progress=False, mesh=mesh,
                                workdir=workdir, **kw)
        return params, summary

    def flat(params):
        return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}

    ref, ref_summary = run(None)
    ref_flat = flat(ref)
    meshes = {"8x1": make_mesh(1), "8x1 minor 2": make_mesh(1, data_minor=2), "4x2": make_mesh(2),
              "2x4": make_mesh(4)}
    for name, mesh in meshes.items():
        params, summary = run(mesh)
        got = flat(params)
        out[name] = {"loss_diff": abs(summary["final_loss"] - ref_summary["final_loss"]),
                     "param_diff": max(float(np.max(np.abs(got[k] - ref_flat[k]))) for k in ref_flat),
                     "specs": sorted({str(v.sharding.spec) for v in jax.tree.leaves(params)}),
                     "num_devices": len(jax.tree.leaves(params)[0].sharding.device_set)}

    # SigLIP widths no dim of which divides 8: split over two dims on the minor-axis mesh.
    wide = dataclasses.replace(config, vision=dataclasses.replace(config.vision, width=36, mlp_dim=76))
    wide_params = jax.tree.map(np.asarray, init_params(wide, jax.random.key(1)))
    wide_ref, wide_summary = train(wide, wide_params, batches, cfg, progress=False, mesh=None)
    wide_got, wide_sum = train(wide, wide_params, batches, cfg, progress=False, mesh=meshes["8x1 minor 2"])
    want, got = flat(wide_ref), flat(wide_got)
    dense0 = [v for k, v in jax.tree_util.tree_flatten_with_path(wide_got)[0] if "Dense_0" in jax.tree_util.keystr(k)
              and "kernel" in jax.tree_util.keystr(k)][0]
    out["two_dims"] = {"loss_diff": abs(wide_sum["final_loss"] - wide_summary["final_loss"]),
                       "param_diff": max(float(np.max(np.abs(got[k] - want[k]))) for k in want),
                       "dense0_spec": str(dense0.sharding.spec),
                       "dense0_shard": list(dense0.sharding.shard_shape(dense0.shape))}

    # A checkpoint written on (8,1) at step 2, resumed on (2,4) for steps 3-4.
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_cfg = cfg.__class__(**{**cfg.__dict__, "checkpoint_every": 2})
        first = list(batches[:2]) + [None, None]  # a run that dies after its step-2 checkpoint

        class Dies:
            def __len__(self):
                return len(first)

            def __getitem__(self, i):
                if first[i] is None:
                    raise KeyboardInterrupt
                return first[i]
        try:
            train(config, host_params, Dies(), ckpt_cfg, progress=False, mesh=meshes["8x1"], workdir=Path(tmp))
        except KeyboardInterrupt:
            pass
        import orbax.checkpoint  # noqa: the first run's async save finishes before the manager reopens
        params, summary = train(config, host_params, batches, ckpt_cfg, progress=False, mesh=meshes["2x4"],
                                workdir=Path(tmp))
        got = flat(params)
        out["resume"] = {"resumed_from": summary["resumed_from"],
                         "param_diff": max(float(np.max(np.abs(got[k] - ref_flat[k]))) for k in ref_flat)}

    # Decoding: greedy and beam on every mesh against one device; 8 prompts (rows divide) and 3 (they do not).
    prompts = {}
    for n in (8, 3):
        tokens = rng.integers(2, 300, (n, 7)).astype(np.int32)
        prompts[n] = (rng.uniform(-1, 1, (n, 16, 16, 3)).astype(np.float32), tokens,
                      np.zeros((n, 7), np.int32), (np.arange(7)[None] < rng.integers(3, 8, (n, 1))))
    decoded = {}
    for name, mesh in [("1x1", None)] + list(meshes.items()):
        for n, p in prompts.items():
            for beam in (1, 3):
                key = f"{n}/{beam}"
                toks = generate(config, ref, *p, max_decode_len=6, beam_size=beam, eos_id=1, mesh=mesh)
                decoded.setdefault(key, {})[name] = toks.tolist()
    out["decode"] = decoded
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices():
    return run_on_fake_devices(SCRIPT, 8, timeout=900)


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_steps_equal_single_device(eight_devices, mesh):
    result = eight_devices[mesh]
    assert result["num_devices"] == 8
    assert result["loss_diff"] <= 1e-5 and result["param_diff"] <= 1e-5, result
    # The state really is split: some leaf over 'data', and over 'model' when the mesh has one.
    assert any("data" in spec for spec in result["specs"])
    assert any("model" in spec for spec in result["specs"]) == (not mesh.startswith("8x1"))
    assert any("data_minor" in spec for spec in result["specs"]) == ("minor" in mesh)


def test_a_parameter_no_dim_of_which_divides_the_data_devices_is_split_over_two_dims(eight_devices):
    result = eight_devices["two_dims"]
    assert result["dense0_spec"] == "P(None, 'data_minor', 'data')"
    assert result["dense0_shard"] == [2, 18, 19]  # (depth 2, width 36 / 2, MLP 76 / 4)
    assert result["loss_diff"] <= 1e-5 and result["param_diff"] <= 1e-5, result


def test_checkpoint_from_one_mesh_resumes_on_another(eight_devices):
    result = eight_devices["resume"]
    assert result["resumed_from"] == 2
    assert result["param_diff"] <= 1e-5, result


@pytest.mark.parametrize("case", ["8/1", "8/3", "3/1", "3/3"])
def test_sharded_decoding_gives_the_same_tokens(eight_devices, case):
    by_mesh = eight_devices["decode"][case]
    reference = np.array(by_mesh["1x1"])
    assert reference.shape[1] == 6 and (reference > 0).any()
    for mesh in MESHES:
        np.testing.assert_array_equal(np.array(by_mesh[mesh]), reference, err_msg=f"{case} on {mesh}")
