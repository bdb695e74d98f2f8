"""Efficiency options of the trainer change memory and speed, not the loss: per-module remat policies
give the same loss and gradients as no remat; bfloat16 parameter storage gives the bfloat16-compute
loss to bfloat16 precision and trains; the native (accelerator) matmul mode matches the CPU one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.cell.train import TrainConfig, build_model, cast_params, make_loss_fn, train
from model.paligemma import PaliGemma, init_params
from model.remat import POLICIES, policy_name
from model.testing import random_inputs, tiny_config


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    params = init_params(config, jax.random.key(0))
    params["img"]["head"]["kernel"] = 0.05 * jax.random.normal(jax.random.key(1), params["img"]["head"]["kernel"].shape)
    images, tokens, mask_ar, mask_input = random_inputs(config, [3, 2, 5], [5, 6, 2], seq_len=9, seed=3)
    batch = dict(image=images, text=tokens, mask_ar=mask_ar, mask_input=mask_input, mask_loss=mask_ar * mask_input)
    return config, params, batch


def loss_and_grads(config, params, batch, **cfg_changes):
    cfg = TrainConfig(lr=1e-3, num_steps=1, label_smoothing=0.1, **cfg_changes)
    loss_fn = make_loss_fn(build_model(config, cfg), cfg.label_smoothing, "dense")
    return jax.jit(jax.value_and_grad(loss_fn))(params, batch, jax.random.key(0))


# Each policy once on each module: the ViT gets one and the LLM the next in the list.
PAIRS = [(name, sorted(POLICIES)[(i + 1) % len(POLICIES)]) for i, name in enumerate(sorted(POLICIES))]


@pytest.mark.parametrize(("img", "llm"), PAIRS)
def test_remat_policy_keeps_loss_and_gradients(setup, img, llm):
    config, params, batch = setup
    want, want_g = loss_and_grads(config, params, batch, remat_img="none", remat_llm="none")
    got, got_g = loss_and_grads(config, params, batch, remat_img=img, remat_llm=llm)
    assert abs(float(got) - float(want)) <= 1e-6
    for g, w in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5 * max(1.0, float(np.abs(w).max())))


def test_remat_policy_names():
    assert policy_name(False) == "dots" and policy_name(True) == "full"
    with pytest.raises(ValueError, match="dots_no_batch"):
        policy_name("everything")


@pytest.mark.slow
def test_bfloat16_params_loss(setup):
    config, params, batch = setup
    want, _ = loss_and_grads(config, params, batch, compute_dtype="bfloat16")
    bf16 = cast_params(params, "bfloat16")
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(bf16))
    got, grads = loss_and_grads(config, bf16, batch, compute_dtype="bfloat16")
    assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))
    # Same bfloat16 compute; only the norm scales and biases, used in float32 before, are now rounded.
    assert abs(float(got) - float(want)) <= 1e-2 * abs(float(want))
    with pytest.raises(ValueError, match="param_dtype"):
        cast_params(params, "float16")


@pytest.mark.slow
def test_train_with_bfloat16_params_learns(setup):
    config, params, batch = setup
    cfg = TrainConfig(lr=3e-3, num_steps=8, warmup_fraction=0.0, compute_dtype="bfloat16", param_dtype="bfloat16")
    first, _ = loss_and_grads(config, cast_params(params, "bfloat16"), batch, compute_dtype="bfloat16")
    trained, summary = train(config, jax.tree.map(jnp.array, params), [batch] * 8, cfg, progress=False)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(trained))
    assert summary["final_loss"] < float(first) - 0.1


@pytest.mark.slow
def test_native_matmul_mode_matches_cast_mode(setup, monkeypatch):
    """The accelerators' mode (plain bf16 dots, bf16 backward products) on the CPU: float32 compute is
    the same program; bfloat16 compute agrees to bfloat16 precision."""
    config, params, batch = setup
    results = {}
    for mode in ("cast", "native"):
        monkeypatch.setenv("PALIGEMMA_MATMUL", mode)
        for dtype in ("float32", "bfloat16"):
            results[mode, dtype] = loss_and_grads(config, params, batch, compute_dtype=dtype)
    (l32c, g32c), (l32n, g32n) = results["cast", "float32"], results["native", "float32"]
    assert float(l32c) == float(l32n)
    for a, b in zip(jax.tree.leaves(g32c), jax.tree.leaves(g32n)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    (lc, gc), (ln, gn) = results["cast", "bfloat16"], results["native", "bfloat16"]
    assert abs(float(lc) - float(ln)) <= 1e-2 * abs(float(lc))
    flat = lambda g: np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(g)])
    a, b = flat(gc), flat(gn)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
    # The native mode really differs in the backward pass: no float32 x float32 products left.
    monkeypatch.setenv("PALIGEMMA_MATMUL", "native")
    model = PaliGemma(config, dtype=jnp.bfloat16)
    loss_fn = make_loss_fn(model, 0.0, "dense")
    hlo = jax.jit(jax.grad(loss_fn)).lower(cast_params(params, "bfloat16"), batch, jax.random.key(0)).as_text()
    assert f32_by_f32_dots(hlo) == 0 < len(_dots(hlo))
    monkeypatch.setenv("PALIGEMMA_MATMUL", "cast")
    hlo = jax.jit(jax.grad(loss_fn)).lower(cast_params(params, "bfloat16"), batch, jax.random.key(0)).as_text()
    assert f32_by_f32_dots(hlo) > 0  # the CPU mode's backward products run in float32


def _dots(hlo: str) -> list[str]:
    """The operand types of each dot in StableHLO text: '(tensor<AxBxf32>, tensor<CxDxbf16>)'."""
    return [line.rsplit(":", 1)[-1].split("->")[0] for line in hlo.splitlines() if "stablehlo.dot_general" in line]


def f32_by_f32_dots(hlo: str) -> int:
    return sum(operands.count("xf32>") == 2 for operands in _dots(hlo))
