"""Fine-tuned params survive an orbax save/restore exactly, in their own dtypes or in `like`'s."""

import jax
import ml_dtypes
import numpy as np
import pytest

from model.checkpoint import flatten, restore_orbax, save_orbax
from model.config import get_config
from model.paligemma import init_params


@pytest.fixture(scope="module")
def params():
    tree = init_params(get_config("nano-s-32"), jax.random.key(0))
    tree["llm"] = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), tree["llm"])  # mixed dtypes
    return tree


def test_round_trip_is_exact(params, tmp_path):
    save_orbax(str(tmp_path / "ckpt"), params)
    restored = restore_orbax(str(tmp_path / "ckpt"))
    a, b = flatten(params), flatten(restored)
    assert a.keys() == b.keys()
    for key in a:
        assert np.asarray(b[key]).dtype == a[key].dtype, key
        np.testing.assert_array_equal(np.asarray(b[key]).astype(np.float32), np.asarray(a[key]).astype(np.float32))


def test_restore_like_casts_to_the_template(params, tmp_path):
    save_orbax(str(tmp_path / "ckpt"), params)
    like = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
    restored = restore_orbax(str(tmp_path / "ckpt"), like=like)
    assert {np.asarray(x).dtype for x in jax.tree.leaves(restored)} == {np.dtype("float32")}
    np.testing.assert_array_equal(np.asarray(restored["llm"]["final_norm"]["scale"]),
                                  np.asarray(params["llm"]["final_norm"]["scale"]).astype(np.float32))


def test_refuses_to_overwrite(params, tmp_path):
    save_orbax(str(tmp_path / "ckpt"), params)
    with pytest.raises(Exception, match="exists"):
        save_orbax(str(tmp_path / "ckpt"), params)
