"""Sharding: the partition rules, and params + a jitted matmul really split over a 4-device CPU mesh.

The multi-device part runs in a subprocess because XLA reads --xla_force_host_platform_device_count
only before jax first initialises its backends, and pytest has usually imported jax by then.
"""

import textwrap

import jax
import pytest
from jax.sharding import PartitionSpec as P

from model import sharding
from model.sharding import DATA, DATA_MINOR, MODEL, initialize_distributed, partition_spec
from tests.helpers.fake_devices import run_on_fake_devices

MESH_4x1, MESH_2x2 = {DATA: 4, MODEL: 1}, {DATA: 2, MODEL: 2}


def test_fsdp_shards_the_largest_divisible_axis():
    assert partition_spec("llm/embedder/input_embedding", (4096, 128), MESH_4x1) == P(DATA, None)
    assert partition_spec("llm/layers/attn/q_einsum/w", (3, 4, 128, 32), MESH_4x1) == P(None, None, DATA, None)
    # 4098 is not divisible by 4, so the smaller 128 axis is split instead.
    assert partition_spec("x", (4098, 128), MESH_4x1) == P(None, DATA)
    assert partition_spec("llm/final_norm/scale", (3,), MESH_4x1) == P(None)
    assert partition_spec("scalar", (), MESH_4x1) == P()


def test_model_axis_takes_heads_and_mlp_hidden():
    assert partition_spec("llm/layers/attn/q_einsum/w", (3, 4, 128, 32), MESH_2x2) == P(None, MODEL, DATA, None)
    kv = "llm/layers/attn/kv_einsum/w"
    assert partition_spec(kv, (3, 2, 2, 128, 32), MESH_2x2) == P(None, None, MODEL, DATA, None)
    assert partition_spec("llm/layers/mlp/gating_einsum", (3, 2, 128, 512), MESH_2x2) == P(None, None, DATA, MODEL)
    assert partition_spec("llm/layers/mlp/linear", (3, 512, 128), MESH_2x2) == P(None, MODEL, DATA)
    vit = "img/Transformer/encoderblock/MultiHeadDotProductAttention_0"
    assert partition_spec(f"{vit}/query/kernel", (4, 128, 4, 32), MESH_2x2) == P(None, DATA, MODEL, None)
    assert partition_spec(f"{vit}/out/kernel", (4, 4, 32, 128), MESH_2x2) == P(None, MODEL, None, DATA)
    # Unscanned (no layer axis): the same rule, counted from the end.
    assert partition_spec("llm/layers/mlp/linear", (512, 128), MESH_2x2) == P(MODEL, DATA)
    # Heads not divisible by the model axis: the largest dim dividing both axes takes them together.
    assert partition_spec(kv, (3, 2, 1, 128, 32), MESH_2x2) == P(None, None, None, (DATA, MODEL), None)
    assert partition_spec(kv, (3, 2, 1, 6, 10), MESH_2x2) == P(None, None, None, None, DATA)  # none divides 4
    # The vocabulary goes over 'model' (the logits' V axis), the width over 'data'.
    assert partition_spec("llm/embedder/input_embedding", (4096, 128), MESH_2x2) == P(MODEL, DATA)
    assert partition_spec("llm/final_norm/scale", (128,), MESH_2x2) == P((DATA, MODEL))


def test_an_axis_no_dim_divides_stays_whole_and_shard_shape_counts_it():
    """SigLIP So400m on 256 data devices: 1152 = 2^7 x 9 and 4304 = 2^4 x 269 do not divide by 256."""
    mesh = {DATA: 256, MODEL: 1}
    dense0 = "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"
    assert partition_spec(dense0, (27, 1152, 4304), mesh) == P(None, None, None)
    assert sharding.shard_shape((27, 1152, 4304), P(None, None, None), mesh) == (27, 1152, 4304)
    assert partition_spec(dense0, (27, 1152, 4304), {DATA: 128, MODEL: 2}) == P(None, DATA, MODEL)
    assert sharding.shard_shape((27, 1152, 4304), P(None, DATA, MODEL), {DATA: 128, MODEL: 2}) == (27, 9, 2152)
    assert sharding.shard_shape((8, 6), P((DATA, MODEL)), {DATA: 2, MODEL: 4}) == (1, 6)


def test_a_minor_data_axis_splits_two_dims_where_no_dim_divides_every_data_device():
    """The same SigLIP on 256 data devices as (data 32, data_minor 8): its kernels go over two dims."""
    mesh = {DATA: 32, DATA_MINOR: 8, MODEL: 1}
    block = "img/Transformer/encoderblock/"
    assert partition_spec(block + "MlpBlock_0/Dense_0/kernel", (27, 1152, 4304), mesh) == P(None, DATA, DATA_MINOR)
    assert partition_spec(block + "MlpBlock_0/Dense_1/kernel", (27, 4304, 1152), mesh) == P(None, DATA_MINOR, DATA)
    query = block + "MultiHeadDotProductAttention_0/query/kernel"
    assert partition_spec(query, (27, 1152, 16, 72), mesh) == P(None, DATA, None, DATA_MINOR)
    # Only one axis divides: the larger one that does (4304 / 8; 4304 / 32 is not whole).
    assert partition_spec(block + "MlpBlock_0/Dense_0/bias", (27, 4304), mesh) == P(None, DATA_MINOR)
    # A dim that divides by all 256 takes both axes, as it would take a single data axis of 256.
    assert partition_spec("llm/layers/mlp/linear", (26, 9216, 2304), mesh) == P(None, (DATA, DATA_MINOR), None)
    assert sharding.shard_shape((27, 1152, 4304), P(None, DATA, DATA_MINOR), mesh) == (27, 36, 538)
    # Heads over 'model' and the rest over both data axes on one dim.
    mesh_2 = {DATA: 16, DATA_MINOR: 8, MODEL: 2}
    assert partition_spec("llm/final_norm/scale", (2304,), mesh_2) == P((DATA, DATA_MINOR, MODEL))


def test_the_minor_axis_is_chosen_only_where_it_holds_fewer_params():
    from model.config import config_for
    from model.paligemma import param_shapes

    shapes = param_shapes(config_for("3b", 896))
    assert sharding.data_minor_size(shapes, 8) == 1  # every large dim divides 8: no minor axis
    assert sharding.data_minor_size(shapes, 128) == 1  # only a few biases stay whole: under 5% to gain
    assert sharding.data_minor_size(shapes, 256) == 8  # SigLIP whole on one axis of 256


def test_make_mesh_checks_the_model_axis():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == (DATA, MODEL) and mesh.shape[MODEL] == 1
    with pytest.raises(ValueError, match="model_parallel=3 must be >= 1 and divide"):
        sharding.make_mesh(3, devices=jax.devices() * 2)


def test_initialize_distributed(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert initialize_distributed() is False and calls == []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert initialize_distributed() is True
    assert calls == [dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)]


SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from model.config import get_config
    from model.paligemma import param_shapes
    from model.sharding import batch_sharding, make_mesh, param_shardings, shard_params

    # The real model's tree, as zeros: no init compile, which the test does not need.
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(get_config("nano-s-32")))
    out = {"devices": jax.device_count()}
    for name, mp in (("4x1", 1), ("2x2", 2)):
        mesh = make_mesh(mp)
        sharded = shard_params(params, mesh)
        flat = jax.tree_util.tree_flatten_with_path(sharded)[0]
        out[name] = {jax.tree_util.keystr(k): [list(v.sharding.spec), list(v.addressable_shards[0].data.shape)]
                     for k, v in flat}
        # Logits-style matmul: batch-sharded activations times the FSDP-sharded embedding table.
        emb_sharding = param_shardings(params, mesh)["llm"]["embedder"]["input_embedding"]
        emb = jax.device_put(np.ones((4096, 128), np.float32), emb_sharding)
        x = np.arange(8 * 128, dtype=np.float32).reshape(8, 128) / 1000
        matmul = jax.jit(lambda x, w: x @ w.T, out_shardings=batch_sharding(mesh),
                         in_shardings=(batch_sharding(mesh), emb_sharding))
        y = matmul(jax.device_put(x, batch_sharding(mesh)), emb)
        out[name + "/matmul"] = {
            "close": bool(np.allclose(np.asarray(y), x @ np.ones((128, 4096)), rtol=1e-5)),
            "spec": list(y.sharding.spec), "shard": list(y.addressable_shards[0].data.shape),
            "num_devices": len(y.sharding.device_set)}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def four_devices():
    return run_on_fake_devices(SCRIPT, 4, timeout=300)


def test_params_shard_over_four_devices(four_devices):
    assert four_devices["devices"] == 4
    fsdp = four_devices["4x1"]
    assert fsdp["['llm']['embedder']['input_embedding']"] == [["data", None], [1024, 128]]
    # The real model's names meet the rules. nano-s: ViT depth 4, width 128, 4 heads of 32, mlp 512;
    # LLM depth 3, width 128, 4 heads / 2 kv heads of 32, mlp 512.
    q = "['img']['Transformer']['encoderblock']['MultiHeadDotProductAttention_0']['query']['kernel']"
    assert fsdp[q] == [[None, "data", None, None], [4, 32, 4, 32]]
    tp = four_devices["2x2"]
    assert tp[q] == [[None, "data", "model", None], [4, 64, 2, 32]]
    dense0 = "['img']['Transformer']['encoderblock']['MlpBlock_0']['Dense_0']['kernel']"
    assert tp[dense0] == [[None, "data", "model"], [4, 64, 256]]
    assert tp["['llm']['layers']['attn']['q_einsum']['w']"] == [[None, "model", "data", None], [3, 2, 64, 32]]
    kv = "['llm']['layers']['attn']['kv_einsum']['w']"
    assert tp[kv] == [[None, None, "model", "data", None], [3, 2, 1, 64, 32]]
    assert tp["['llm']['layers']['mlp']['gating_einsum']"] == [[None, None, "data", "model"], [3, 2, 64, 256]]
    assert tp["['llm']['layers']['mlp']['linear']"] == [[None, "model", "data"], [3, 256, 64]]
    # Every parameter is split over 'data' somewhere (all nano-s dims are even) and none is whole.
    for spec, shape in fsdp.values():
        assert "data" in spec, (spec, shape)


def test_jitted_matmul_runs_sharded(four_devices):
    for name, rows_per_device in (("4x1", 2), ("2x2", 4)):
        result = four_devices[name + "/matmul"]
        assert result["close"] and result["num_devices"] == 4
        assert result["spec"][0] == "data"
        assert result["shard"] == [rows_per_device, 4096]


TRAIN_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from harness.cell.train import TrainConfig, train
    from model.paligemma import init_params
    from model.sharding import make_mesh
    from model.testing import tiny_config

    config = tiny_config()
    rng = np.random.default_rng(0)
    b, t = 4, 10
    batches = [dict(image=rng.uniform(-1, 1, (b, 16, 16, 3)).astype(np.float32),
                    text=rng.integers(2, 300, (b, t)).astype(np.int32),
                    mask_ar=(np.arange(t) >= 4).astype(np.int32)[None].repeat(b, 0),
                    mask_loss=(np.arange(t) >= 4).astype(np.int32)[None].repeat(b, 0),
                    mask_input=np.ones((b, t), np.int32)) for _ in range(2)]
    host = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    # Adam divides by sqrt(v), so a reassociation-sized change in a near-zero gradient can move a param
    # by a fraction of the lr: differences scale with the lr, which is kept at a fine-tuning size here.
    cfg = TrainConfig(lr=3e-4, num_steps=2)
    ref, ref_summary = train(config, host, batches, cfg, progress=False)
    mesh = make_mesh(2)
    params, summary = train(config, host, batches, cfg, progress=False, mesh=mesh)
    print(json.dumps({
        "param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(r))))
                          for a, r in zip(jax.tree.leaves(params), jax.tree.leaves(ref))),
        "loss_diff": abs(summary["final_loss"] - ref_summary["final_loss"]),
        "q_spec": list(params["llm"]["layers"]["attn"]["q_einsum"]["w"].sharding.spec)}))
""")


def test_train_on_a_2x2_mesh_equals_one_device():
    """The default run's check of the sharded train step (tests/test_sharded_train.py, slow, has the
    8-device meshes, the cross-mesh resume and sharded decoding)."""
    out = run_on_fake_devices(TRAIN_SCRIPT, 4, timeout=600)
    assert out["param_diff"] <= 1e-5 and out["loss_diff"] <= 1e-5, out
    assert out["q_spec"] == [None, "model", "data", None]  # tiny: (depth, 4 heads, width 64, 24)


def test_check_batch_is_one_line_naming_the_mesh_and_the_fix():
    from types import SimpleNamespace

    mesh = SimpleNamespace(shape={sharding.DATA: 4, sharding.MODEL: 2})  # only the axis sizes are read
    assert sharding.check_batch(8, mesh) == 8
    with pytest.raises(ValueError, match=r"^mesh data=4 x model=2 has a data axis of 4, which does not split "
                                         r"the batch size 6; choose a batch size divisible by 4 or another mesh$"):
        sharding.check_batch(6, mesh)
    with pytest.raises(ValueError, match=r"^grid mesh has a data axis of 4, .* size 6; set the grid's mesh$"):
        sharding.check_batch(6, mesh, where="grid mesh", fix="set the grid's mesh")
