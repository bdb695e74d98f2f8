"""The chunked cross-entropy (model/losses.py) equals the dense one, value and gradient, and the
trainer's loss is the same with TrainConfig.loss_impl 'dense' and 'chunked'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.cell.train import TrainConfig, build_model, make_loss_fn
from model.losses import chunked_token_losses, default_chunk, masked_mean, token_losses
from model.paligemma import init_params
from model.testing import random_inputs, tiny_config


def _soft_capped_logits(table, cap=2.0):
    return lambda h: cap * jnp.tanh(jnp.einsum("nd,vd->nv", h, table) / cap)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [5, 8, 64])  # 5 does not divide 2 x 11 positions; 64 > all of them
def test_chunked_equals_dense_value_and_gradient(label_smoothing, chunk):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(k1, (2, 11, 16))
    table = jax.random.normal(k2, (300, 16))
    targets = jax.random.randint(k3, (2, 11), 0, 300)
    mask = jax.random.bernoulli(k4, 0.7, (2, 11))

    def dense(h, w):
        return jnp.mean(masked_mean(token_losses(_soft_capped_logits(w)(h.reshape(-1, 16)).reshape(2, 11, 300),
                                                 targets, label_smoothing), mask))

    def chunked(h, w):
        return jnp.mean(masked_mean(chunked_token_losses(h, targets, _soft_capped_logits(w), label_smoothing,
                                                         chunk), mask))

    want, want_grads = jax.value_and_grad(dense, argnums=(0, 1))(hidden, table)
    got, got_grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(hidden, table)
    assert abs(float(got) - float(want)) <= 1e-5 * max(1.0, abs(float(want)))
    for g, w in zip(got_grads, want_grads):
        assert float(jnp.abs(w).max()) > 1e-4
        assert_close(g, w)


def test_default_chunk():
    assert default_chunk(257_152) == 520
    assert default_chunk(4096) == 32768
    assert default_chunk(10**9) == 8


def _loss_and_grads(config, params, batch, loss_impl, label_smoothing):
    model = build_model(config, TrainConfig(lr=1e-3, num_steps=1))
    loss_fn = make_loss_fn(model, label_smoothing, loss_impl, chunk=7)  # 7 does not divide 3 x 8
    return jax.jit(jax.value_and_grad(loss_fn))(params, batch, jax.random.key(0))


def assert_close(got, want, tol=1e-5):
    """|got - want| <= tol, relative to the largest |want| when that is above 1 (float32 sums)."""
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(np.asarray(got) - np.asarray(want)).max()) <= tol * scale


def _batch(config):
    images, tokens, mask_ar, mask_input = random_inputs(config, [3, 2, 5], [5, 6, 2], seq_len=9, seed=3)
    return dict(image=images, text=tokens, mask_ar=mask_ar, mask_input=mask_input,
                mask_loss=mask_ar * mask_input)


@pytest.mark.slow
def test_train_step_loss_dense_equals_chunked():
    config = tiny_config()
    params = init_params(config, jax.random.key(0))
    batch = _batch(config)
    want, want_g = _loss_and_grads(config, params, batch, "dense", 0.1)
    got, got_g = _loss_and_grads(config, params, batch, "chunked", 0.1)
    assert abs(float(got) - float(want)) <= 1e-5
    for g, w in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
        assert_close(g, w)


@pytest.mark.slow
def test_train_step_runs_with_each_loss_impl():
    """make_train_step itself with both settings: the same loss after one step from the same state."""
    from harness.cell.train import make_optimizer, make_train_step

    config = tiny_config()
    params = init_params(config, jax.random.key(0))
    batch = _batch(config)
    cfg = TrainConfig(lr=1e-3, num_steps=2, label_smoothing=0.1)
    losses = {}
    for impl in ("dense", "chunked"):
        tx = make_optimizer(params, cfg)
        p = jax.tree.map(jnp.array, params)
        step = make_train_step(build_model(config, cfg), tx, cfg.label_smoothing, loss_impl=impl)
        _, _, stats = step(p, tx.init(p), batch, jax.random.key(1))
        losses[impl] = float(stats["loss"])
    assert abs(losses["dense"] - losses["chunked"]) <= 1e-5
    with pytest.raises(ValueError, match="loss_impl"):
        make_train_step(build_model(config, cfg), make_optimizer(params, cfg), 0.0, loss_impl="fast")(
            params, make_optimizer(params, cfg).init(params), batch, jax.random.key(1))
