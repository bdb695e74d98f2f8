import jax.numpy as jnp
import numpy as np
import pytest

from model.posemb import resample_posemb


def test_constant_grid_stays_constant_and_shape_changes():
    pe = jnp.ones((1, 16, 3)) * jnp.array([1.0, 2.0, 3.0])
    out = resample_posemb(pe, 64)
    assert out.shape == (1, 64, 3)
    np.testing.assert_allclose(out[0], np.tile([1.0, 2.0, 3.0], (64, 1)), rtol=1e-6)


def test_linear_ramp_is_preserved_in_order():
    ramp = jnp.arange(4.0)[None, :].repeat(4, 0)  # varies along x only
    out = resample_posemb(ramp.reshape(1, 16, 1), 64).reshape(8, 8)
    assert (np.diff(np.asarray(out), axis=1) >= 0).all()
    np.testing.assert_allclose(np.diff(np.asarray(out), axis=0), 0, atol=1e-6)


def test_non_square_grid_is_an_error():
    with pytest.raises(ValueError, match="square grids"):
        resample_posemb(jnp.ones((1, 15, 2)), 64)
