"""The trainer's optimizer and loss follow big_vision's transfer semantics (docs/paligemma2-facts.md §0.9-§0.10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.cell.train import TrainConfig, make_optimizer, per_example_loss, schedule


def _params():
    return {
        "img": {"head": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 3.0)}},
        "llm": {"final_norm": {"scale": jnp.full((2,), 4.0)}},
    }


def _grads(scale=1.0):
    return jax.tree_util.tree_map(lambda p: jnp.full(p.shape, 0.1 * scale), _params())


def test_schedule_is_5pct_linear_warmup_then_cosine_to_zero():
    s = schedule(100, 0.05)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(1.0)
    assert float(s(2)) == pytest.approx(0.4)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
    # cosine half-way point between warmup end and the last step
    assert float(s(5 + 95 // 2)) == pytest.approx(0.5 * (1 + np.cos(np.pi * (95 // 2) / 95)), abs=1e-6)


def test_first_update_is_minus_sched_times_lr_adam_plus_wd_on_kernels_only():
    cfg = TrainConfig(lr=0.01, num_steps=20, weight_decay=0.5, warmup_fraction=0.05)
    params = _params()
    tx = make_optimizer(params, cfg)
    state = tx.init(params)
    # step 0 has schedule 0: nothing moves.
    updates, state = tx.update(_grads(), state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree_util.tree_leaves(updates))
    # step 1: schedule = 1 (warmup is 1 step); adam's bias-corrected first step is g/|g| = 1 per entry.
    updates, state = tx.update(_grads(), state, params)
    sched = float(schedule(20, 0.05)(1))
    adam = 1.0  # m_hat / (sqrt(v_hat) + eps) with a constant gradient
    np.testing.assert_allclose(updates["img"]["head"]["kernel"], -sched * (0.01 * adam + 0.5 * 2.0), rtol=1e-4)
    # wd is NOT applied to non-kernel params and NOT multiplied by lr
    np.testing.assert_allclose(updates["img"]["head"]["bias"], -sched * 0.01 * adam, rtol=1e-4)
    np.testing.assert_allclose(updates["llm"]["final_norm"]["scale"], -sched * 0.01 * adam, rtol=1e-4)


def test_frozen_group_gets_zero_updates_and_stays_out_of_the_clip_norm():
    params = _params()
    huge = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, 1e6), params)
    huge["llm"] = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, 0.1), params["llm"])
    cfg = TrainConfig(lr=1.0, num_steps=4, warmup_fraction=0.0, freeze_img=True, b2=0.999)
    tx = make_optimizer(params, cfg)
    state = tx.init(params)
    updates, _ = tx.update(huge, state, params)
    assert float(jnp.abs(updates["img"]["head"]["kernel"]).max()) == 0.0
    # Only the llm grads (norm 0.1*sqrt(2) < 1) enter the clip: they pass unclipped, so adam's first
    # step is exactly -sched * lr * 1.
    np.testing.assert_allclose(updates["llm"]["final_norm"]["scale"], -1.0, rtol=1e-4)


def _tower_params():
    params = _params()
    params["img"]["embedding"] = {"kernel": jnp.full((3, 2), 1.0), "bias": jnp.full((2,), 0.5)}
    return params


def _updates(cfg, grads, steps=3):
    """The updates of `steps` steps on the same gradients and params (params not moved: the weight decay
    term sees the same params each step)."""
    params = _tower_params()
    tx = make_optimizer(params, cfg)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        out.append(updates)
    return out


def test_img_tower_lr_mult_scales_only_the_towers_updates():
    """img_tower_lr_mult=0.25: the tower (not its projector `head`) moves a quarter as far, weight decay
    included; everything else moves exactly as with the plain optimizer."""
    rng = np.random.default_rng(0)
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(0, 0.1, p.shape), jnp.float32), _tower_params())
    kw = dict(lr=0.01, num_steps=8, weight_decay=0.5)
    plain, slow = _updates(TrainConfig(**kw), grads), _updates(TrainConfig(**kw, img_tower_lr_mult=0.25), grads)
    for a, b in zip(plain, slow):
        np.testing.assert_allclose(b["img"]["embedding"]["kernel"], 0.25 * a["img"]["embedding"]["kernel"], rtol=1e-5)
        np.testing.assert_allclose(b["img"]["embedding"]["bias"], 0.25 * a["img"]["embedding"]["bias"], rtol=1e-5)
        for group, module in (("img", "head"), ("llm", "final_norm")):
            jax.tree_util.tree_map(np.testing.assert_array_equal, a[group][module], b[group][module])
    assert float(jnp.abs(plain[-1]["img"]["embedding"]["kernel"]).max()) > 0


def test_img_tower_lr_mult_clips_by_the_norm_of_everything_trained():
    """Clipping is shared as without the option: at a multiplier of 1 the tower-lr optimizer's updates equal
    the plain one's step for step, on gradients large enough to clip; a frozen group's gradients do not
    count towards the norm."""
    from harness.cell.train import _tower_lr_optimizer, img_tower_labels

    params = _tower_params()
    rng = np.random.default_rng(1)
    grads = [jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(0, 3.0, p.shape), jnp.float32), params)
             for _ in range(4)]  # global norm ~10: every step clips
    cfg = TrainConfig(lr=0.01, num_steps=8, weight_decay=0.1)
    labels = {g: jax.tree_util.tree_map(lambda _: "train", t) for g, t in params.items()}
    for tx_a, tx_b in [(make_optimizer(params, cfg),
                        _tower_lr_optimizer(labels, img_tower_labels(params["img"], tower="tower"), cfg))]:
        sa, sb = tx_a.init(params), tx_b.init(params)
        for g in grads:
            ua, sa = tx_a.update(g, sa, params)
            ub, sb = tx_b.update(g, sb, params)
            jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-9), ua, ub)
    frozen_llm = TrainConfig(lr=0.01, num_steps=8, img_tower_lr_mult=0.5, freeze_llm=True)
    small, huge = grads[0], {**grads[0], "llm": jax.tree_util.tree_map(lambda g: g * 1e6, grads[0]["llm"])}
    tx = make_optimizer(params, frozen_llm)
    state = tx.init(params)
    u_small, _ = tx.update(small, state, params)
    u_huge, _ = tx.update(huge, state, params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, u_small, u_huge)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree_util.tree_leaves(u_huge["llm"]))


def test_loss_is_mean_over_suffix_tokens_then_over_examples():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]],
                                [[0.2, 0.2, 0.6], [0.6, 0.2, 0.2], [0.2, 0.6, 0.2]]]))
    targets = jnp.array([[0, 1, 2], [2, 0, 1]])
    mask = jnp.array([[1, 1, 0], [0, 0, 1]])
    got = per_example_loss(logits, targets, mask, 0.0)
    np.testing.assert_allclose(got, [-(np.log(0.5) + np.log(0.8)) / 2, -np.log(0.6)], rtol=1e-6)


def test_label_smoothing_puts_ls_over_v_minus_1_on_other_classes():
    logits = jnp.log(jnp.array([[[0.5, 0.3, 0.2]]]))
    ls = 0.1
    got = float(per_example_loss(logits, jnp.array([[0]]), jnp.array([[1]]), ls)[0])
    want = -((1 - ls) * np.log(0.5) + ls / 2 * np.log(0.3) + ls / 2 * np.log(0.2))
    assert got == pytest.approx(want, rel=1e-6)
