"""big_vision .npz files: the released layout (optional 'params/' prefix, bf16 as 2-byte void) loads
and matches its HF twin; save_npz round-trips; config inference and shape errors."""

import jax
import ml_dtypes
import numpy as np
import pytest

from model.checkpoint import CheckpointError, flatten, load, save_npz
from model.config import get_config
from model.paligemma import PaliGemma, init_params
from model.testing import random_inputs, tiny_config


@pytest.fixture(scope="module")
def nano():
    config = get_config("nano-s-32")
    return config, init_params(config, jax.random.key(0))


def test_released_layout_matches_its_hf_twin(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from model.testing import hf_inputs, random_hf_model

    config = tiny_config()
    hf = random_hf_model(config, seed=7)
    with torch.no_grad():  # bf16-representable weights, so the bf16 .npz holds exactly the same model
        for p in hf.parameters():
            p.copy_(p.bfloat16().float())
    hf.save_pretrained(tmp_path / "hf")
    _, twin = load(str(tmp_path / "hf"))

    path = str(tmp_path / "released.npz")
    np.savez(path, **{f"params/{k}": np.asarray(v).astype(ml_dtypes.bfloat16) for k, v in flatten(twin).items()})
    with np.load(path) as raw:
        assert raw["params/llm/layers/mlp/linear"].dtype == np.dtype("V2")

    _, params = load(path, config)
    assert params["llm"]["embedder"]["input_embedding"].dtype == ml_dtypes.bfloat16
    inputs = random_inputs(config, [3, 5], [4, 2], 9, seed=3)
    ours = np.asarray(PaliGemma(config).apply({"params": params}, *inputs))
    np.testing.assert_array_equal(ours, np.asarray(PaliGemma(config).apply({"params": twin}, *inputs)))
    with torch.no_grad():
        ref = hf(**hf_inputs(config, *inputs), use_cache=False).logits[:, config.num_image_tokens:].numpy()
    assert np.abs(ours - ref)[inputs[3].astype(bool)].max() <= 1e-4


def test_save_npz_round_trips_and_infers_the_config(nano, tmp_path):
    config, params = nano
    bf16 = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16), params)
    save_npz(str(tmp_path / "x.npz"), bf16)
    loaded_config, loaded = load(str(tmp_path / "x.npz"))
    assert loaded_config == config
    a, b = flatten(bf16), flatten(loaded)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key].dtype == ml_dtypes.bfloat16 and np.array_equal(a[key].view(np.uint16), b[key].view(np.uint16))
    _, as_f32 = load(str(tmp_path / "x.npz"), "nano-s-32", dtype=np.float32)
    assert as_f32["img"]["pos_embedding"].dtype == np.float32


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.pop("llm/final_norm/scale"), r"missing parameter 'llm/final_norm/scale' \(expected shape \(128,\)\)"),
    (lambda f: f.update({"llm/extra": np.zeros(2)}), r"unexpected parameter 'llm/extra' with shape \(2,\)"),
    (lambda f: f.update({"img/head/bias": np.zeros(5)}),
     r"parameter 'img/head/bias' has shape \(5,\), expected \(128,\) for config 'nano-s-32'"),
])
def test_mismatched_keys_are_named_with_both_shapes(nano, tmp_path, edit, message):
    _, params = nano
    flat = {k: np.asarray(v) for k, v in flatten(params).items()}
    edit(flat)
    np.savez(tmp_path / "bad.npz", **flat)
    with pytest.raises(CheckpointError, match=message):
        load(str(tmp_path / "bad.npz"), "nano-s-32")


def test_shapes_outside_the_family_table_need_a_config(tmp_path):
    config = tiny_config()
    save_npz(str(tmp_path / "t.npz"), init_params(config, jax.random.key(0)))
    with pytest.raises(CheckpointError, match="no config in the family table has these shapes"):
        load(str(tmp_path / "t.npz"))
    assert load(str(tmp_path / "t.npz"), config)[0] == config
