"""The LLM block's dropout sits where big_vision puts it (models/ppp/gemma.py Block.__call__ at 0127fb6,
lines 409-418): attention branch post-norm -> dropout; MLP branch dropout -> post-norm."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.gemma2 import Block, rope_tables
from model.testing import tiny_config

RATE = 0.5
T = 5


def _block_and_inputs():
    c = tiny_config().llm
    x = jax.random.normal(jax.random.PRNGKey(0), (2, T, c.width))
    sin, cos = rope_tables(jnp.broadcast_to(jnp.arange(T), (2, T)), c.head_dim, c.rope_base)
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (2, T, T))
    shared = dict(sin=sin, cos=cos, mask=mask, sliding_mask=None, end=None)
    block = Block(c, jnp.float32, RATE, deterministic=False, parent=None)
    params = block.init({"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)},
                        (x, None), False, shared)["params"]
    # A post-norm scale far from 0 so that where the norm sits changes the numbers.
    scale = jax.random.normal(jax.random.PRNGKey(3), params["post_ffw_norm"]["scale"].shape)
    params = {**params, "post_ffw_norm": {"scale": scale}}
    return c, block, params, x, shared


def _fixed_drop(y: jax.Array) -> jax.Array:
    """Dropout with a mask fixed by the shape, so a reference can apply the same one."""
    keep = np.random.default_rng(y.size).random(y.shape) >= RATE
    return jnp.where(keep, y / (1.0 - RATE), 0.0)


def _rms_norm(y, scale, eps):
    return y * jax.lax.rsqrt(jnp.mean(y * y, axis=-1, keepdims=True) + eps) * (1.0 + scale)


def test_mlp_dropout_comes_before_post_ffw_norm_as_big_vision():
    c, block, params, x, shared = _block_and_inputs()
    seen = {}

    def intercept(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            return _fixed_drop(args[0])
        if context.method_name == "__call__" and context.module.name == "pre_ffw_norm":
            seen["residual"] = args[0]
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.name == "mlp":
            seen["mlp"] = out
        return out

    with nn.intercept_methods(intercept):
        (out, _), _ = block.apply({"params": params}, (x, None), False, shared)
    scale = params["post_ffw_norm"]["scale"]
    big_vision = seen["residual"] + _rms_norm(_fixed_drop(seen["mlp"]), scale, c.norm_eps)
    norm_then_drop = seen["residual"] + _fixed_drop(_rms_norm(seen["mlp"], scale, c.norm_eps))
    np.testing.assert_allclose(out, big_vision, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(big_vision - norm_then_drop))) > 0.1  # the order is visible at this rate


def test_the_mlp_branch_is_normalised_after_real_dropout():
    """With the post-norm last and its scale 0, every token's MLP contribution has RMS 1 whatever was
    dropped; dropout after the norm would zero or inflate parts of it."""
    c, block, params, x, shared = _block_and_inputs()
    params = {**params, "post_ffw_norm": {"scale": jnp.zeros_like(params["post_ffw_norm"]["scale"])}}
    seen = {}

    def intercept(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.name == "pre_ffw_norm":
            seen["residual"] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        (out, _), _ = block.apply({"params": params}, (x, None), False, shared,
                                  rngs={"dropout": jax.random.PRNGKey(7)})
    branch = out - seen["residual"]
    rms = jnp.sqrt(jnp.mean(branch * branch, axis=-1))
    np.testing.assert_allclose(rms, 1.0, rtol=1e-3)
    assert float(jnp.mean(branch == 0.0)) > 0.2  # dropped units stay zero through the norm


def test_deterministic_block_ignores_the_rate():
    c, _, params, x, shared = _block_and_inputs()
    plain = Block(c, jnp.float32, 0.0, deterministic=True, parent=None)
    rated = Block(c, jnp.float32, RATE, deterministic=True, parent=None)
    (a, _), _ = plain.apply({"params": params}, (x, None), False, shared)
    (b, _), _ = rated.apply({"params": params}, (x, None), False, shared)
    np.testing.assert_array_equal(a, b)
