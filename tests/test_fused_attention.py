"""The fused attention path (jax.nn.dot_product_attention, implementation='xla' on the CPU) against the
dense one: same parameters, prefix-LM mask, GQA / MQA, with and without padding, logits within 1e-5."""

import dataclasses

import jax
import numpy as np
import pytest

from model.config import LLMConfig
from model.paligemma import PaliGemma, init_params
from model.testing import random_inputs, tiny_config

# Soft-cap off (the fused path's precondition); the final-logit cap stays on, it is not attention.
BASE = dict(attn_logits_softcap=None, sliding_window=None)
CASES = {
    "gqa": dict(),
    "mqa": dict(num_kv_heads=1),
    "mha-sliding": dict(num_kv_heads=4, sliding_window=3),
}
BATCHES = {
    "padded": ([4, 2, 6], [5, 1, 3]),  # rows end in padding
    "full": ([4, 7, 6], [10, 7, 8]),  # every position real
}


def logits(config, params, inputs):
    return np.asarray(jax.jit(PaliGemma(config).apply)({"params": params}, *inputs))


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("case", list(CASES))
def test_fused_equals_dense(case, batch):
    dense = tiny_config(**{**BASE, **CASES[case]}, attention_impl="dense").with_vision(attention_impl="dense")
    fused = dense.with_llm(attention_impl="fused").with_vision(attention_impl="fused")
    params = init_params(dense, jax.random.key(0))
    # The projector is zero-initialised; give it weights so the image path reaches the logits.
    params["img"]["head"]["kernel"] = 0.05 * jax.random.normal(jax.random.key(1), params["img"]["head"]["kernel"].shape)
    inputs = random_inputs(dense, *BATCHES[batch], seq_len=14, seed=2)
    want, got = logits(dense, params, inputs), logits(fused, params, inputs)
    valid = inputs[3].astype(bool)
    assert np.abs(want[valid]).max() > 0.1  # the check is not vacuous
    np.testing.assert_array_less(np.abs(got - want)[valid], 1e-5)


def test_fused_with_soft_cap_is_refused():
    with pytest.raises(ValueError, match="soft-cap"):
        dataclasses.replace(tiny_config().llm, attention_impl="fused")
    with pytest.raises(ValueError, match="attention_impl"):
        LLMConfig(width=8, depth=1, mlp_dim=8, num_heads=1, num_kv_heads=1, head_dim=8, vocab_size=8,
                  query_pre_attn_scalar=8, attention_impl="flash")


def test_default_is_dense_on_cpu_and_with_soft_cap():
    from model.attention import use_fused

    assert not use_fused(None, 50.0)
    assert use_fused(None, None) == (jax.default_backend() == "gpu")
