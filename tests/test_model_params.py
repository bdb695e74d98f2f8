"""Parameter tree and counts of the real family (eval_shape only, nothing allocated), and the
behaviours of the forward pass that parity with transformers alone would not pin down."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.checkpoint import flatten
from model.config import get_config
from model.paligemma import PaliGemma, init_params, param_count, param_shapes
from model.testing import random_inputs, tiny_config


def test_param_counts_match_keras_hub_and_the_paper():
    # keras-hub presets (docs/paligemma2-facts.md §1.5); the 448 model differs only by its posemb.
    assert param_count(get_config("3b-224")) == 3_032_094_960
    assert param_count(get_config("3b-448")) == 3_032_979_696
    # Paper Table 1: 3.0B / 9.7B / 27.7B.
    rounded = [round(param_count(get_config(f"{s}-224")) / 1e9, 1) for s in ("3b", "10b", "28b")]
    assert rounded == [3.0, 9.7, 27.7]


def test_3b_tree_is_the_big_vision_checkpoint_tree():
    """Every key and shape of a released 3B .npz (docs/paligemma2-facts.md §1.5)."""
    L, V, D, F, W, M = 26, 257152, 2304, 9216, 1152, 4304
    enc, attn = "img/Transformer/encoderblock/", "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
    expected = {
        "img/embedding/kernel": (14, 14, 3, W), "img/embedding/bias": (W,), "img/pos_embedding": (1, 256, W),
        enc + "LayerNorm_0/scale": (27, W), enc + "LayerNorm_0/bias": (27, W),
        enc + "LayerNorm_1/scale": (27, W), enc + "LayerNorm_1/bias": (27, W),
        enc + "MlpBlock_0/Dense_0/kernel": (27, W, M), enc + "MlpBlock_0/Dense_0/bias": (27, M),
        enc + "MlpBlock_0/Dense_1/kernel": (27, M, W), enc + "MlpBlock_0/Dense_1/bias": (27, W),
        **{attn + f"{n}/kernel": (27, W, 16, 72) for n in ("query", "key", "value")},
        **{attn + f"{n}/bias": (27, 16, 72) for n in ("query", "key", "value")},
        attn + "out/kernel": (27, 16, 72, W), attn + "out/bias": (27, W),
        "img/Transformer/encoder_norm/scale": (W,), "img/Transformer/encoder_norm/bias": (W,),
        "img/head/kernel": (W, D), "img/head/bias": (D,),
        "llm/embedder/input_embedding": (V, D), "llm/final_norm/scale": (D,),
        **{f"llm/layers/{n}/scale": (L, D)
           for n in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm")},
        "llm/layers/attn/q_einsum/w": (L, 8, D, 256), "llm/layers/attn/kv_einsum/w": (L, 2, 4, D, 256),
        "llm/layers/attn/attn_vec_einsum/w": (L, 8, 256, D),
        "llm/layers/mlp/gating_einsum": (L, 2, D, F), "llm/layers/mlp/linear": (L, F, D),
    }
    got = {k: tuple(v.shape) for k, v in flatten(param_shapes(get_config("3b-224"))).items()}
    assert got == expected


def test_mha_uses_one_qkv_einsum_like_big_vision():
    keys = flatten(param_shapes(tiny_config(num_kv_heads=4)))
    assert keys["llm/layers/attn/qkv_einsum/w"].shape == (3, 3, 4, 64, 24)
    assert "llm/layers/attn/q_einsum/w" not in keys


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config()
    params = init_params(config, jax.random.key(0))
    # big_vision zero-initialises the projector; give it weights so the image reaches the text.
    params["img"]["head"]["kernel"] = 0.1 * jax.random.normal(jax.random.key(1), params["img"]["head"]["kernel"].shape)
    apply = jax.jit(lambda p, *a: PaliGemma(config).apply({"params": p}, *a))
    return config, params, apply


def test_prefix_lm_mask(tiny):
    """Prefix tokens see the whole prefix (a later prefix token changes earlier logits), the suffix is
    causal (a later suffix token changes nothing before it) and padding is invisible."""
    config, params, apply = tiny
    images, tokens, mask_ar, mask_input = random_inputs(config, [4], [5], 12)
    base = np.asarray(apply(params, images, tokens, mask_ar, mask_input))

    def changed(position):
        t = tokens.copy()
        t[0, position] = 7 if t[0, position] != 7 else 8
        return np.abs(np.asarray(apply(params, images, t, mask_ar, mask_input)) - base).max(axis=-1)[0]

    assert changed(3)[0] > 1e-3  # last prefix token -> first prefix position
    late_suffix = changed(7)
    assert late_suffix[:7].max() == 0 and late_suffix[7] > 1e-3
    assert changed(10)[:9].max() == 0  # padding (its own row is meaningless and ignored)


def test_image_reaches_every_text_position(tiny):
    config, params, apply = tiny
    images, tokens, mask_ar, mask_input = random_inputs(config, [3], [3], 6)
    a = np.asarray(apply(params, images, tokens, mask_ar, mask_input))
    b = np.asarray(apply(params, -images, tokens, mask_ar, mask_input))
    assert np.abs(a - b).max(axis=-1).min() > 1e-4


def test_dropout_only_in_training_and_remat_changes_nothing(tiny):
    config, params, _ = tiny
    inputs = random_inputs(config, [3, 2], [3, 4], 7)
    plain = PaliGemma(config).apply({"params": params}, *inputs)
    model = PaliGemma(config, dropout=0.5)
    run = jax.jit(model.apply, static_argnames="train")
    dropped = run({"params": params}, *inputs, train=True, rngs={"dropout": jax.random.key(0)})
    assert np.abs(np.asarray(plain - dropped)).max() > 1e-3
    np.testing.assert_allclose(run({"params": params}, *inputs), plain, atol=1e-6)

    def loss(p, remat):
        return jnp.mean(PaliGemma(config, remat=remat).apply({"params": p}, *inputs) ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g1, g2 = grad(params, False), grad(params, True)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_stays_close(tiny):
    config, params, apply = tiny
    inputs = random_inputs(config, [3], [3], 6)
    f32 = np.asarray(apply(params, *inputs))
    bf16 = np.asarray(PaliGemma(config, dtype=jnp.bfloat16).apply({"params": params}, *inputs))
    assert bf16.dtype == np.float32 and np.abs(f32 - bf16).max() < 0.05
