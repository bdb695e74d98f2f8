"""Cost model: parameter counts against published numbers, the FLOP formula, the Table 1 comparison."""

import dataclasses
import json
import math

import jax
import pytest
from jax.extend import core as jax_core

from model.config import LLMConfig, PaliGemmaConfig, VisionConfig, config_for, get_config
from model.cost import (
    PRETRAIN_TEXT_LEN,
    TABLE1_RELATIVE_COST,
    cost_table,
    cost_table_json,
    flops_per_example,
    format_cost_table,
    forward_flops,
    memory_plan,
    min_devices,
    param_count,
    params_billions,
)


def test_param_counts_match_keras_hub_presets():
    # docs/paligemma2-facts.md §1.5 [KH]: independent counts of the released checkpoints.
    assert param_count(get_config("3b-224")) == 3_032_094_960
    assert param_count(get_config("3b-448")) == 3_032_979_696


@pytest.mark.parametrize("size,billions", [("3b", 3.0), ("10b", 9.7), ("28b", 27.7)])
def test_params_round_like_table1(size, billions):
    for res in (224, 448, 896):
        assert params_billions(config_for(size, res)) == billions


def test_param_count_equals_eval_shape_of_the_model():
    from model import paligemma

    for name in ("nano-s-32", "nano-l-128", "3b-224", "3b-448", "28b-896"):
        config = get_config(name)
        shapes = jax.eval_shape(lambda rng, c=config: paligemma.init_params(c, rng), jax.random.key(0))
        total = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
        assert total == param_count(config), name


TOY = PaliGemmaConfig(
    name="toy", family="test", size="toy", resolution=28,
    vision=VisionConfig(width=8, depth=2, mlp_dim=16, num_heads=2, patch_size=14, image_size=28),
    llm=LLMConfig(width=6, depth=3, mlp_dim=10, num_heads=2, num_kv_heads=1, head_dim=4,
                  vocab_size=50, query_pre_attn_scalar=4))


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for x in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(x, jax_core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jax_core.Jaxpr):
                yield x


def _matmul_flops(jaxpr) -> int:
    """Reference count: 2 x MACs of every dot_general / convolution the traced program runs.

    XLA's own cost_analysis counts a scan (while loop) body once, not `depth` times, so it cannot be
    the reference for scanned layers; walking the jaxpr and multiplying scan bodies by their length can.
    """
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            total += 2 * math.prod(lhs) * math.prod(d for i, d in enumerate(rhs) if i not in (*rc, *rb))
        elif name == "conv_general_dilated":
            out, kernel = eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape
            total += 2 * math.prod(out) * math.prod(kernel) // kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
        else:
            inner = [_matmul_flops(j) for j in _subjaxprs(eqn)]
            assert name != "while" or not any(inner), "a while loop's trip count is unknown"
            total += eqn.params["length"] * sum(inner) if name == "scan" else sum(inner)
    return total


def _model_jaxpr(name, text_len, grad=False):
    from model import paligemma

    config = get_config(name)
    model = paligemma.PaliGemma(config)
    res = config.vision.image_size
    images = jax.ShapeDtypeStruct((1, res, res, 3), "float32")
    tokens = jax.ShapeDtypeStruct((1, text_len), "int32")
    valid = jax.ShapeDtypeStruct((1, text_len), "bool")
    fwd = lambda p, i, t, a, v: model.apply({"params": p}, i, t, a, v)
    fn = jax.grad(lambda *args: fwd(*args).sum()) if grad else fwd
    return jax.make_jaxpr(fn)(paligemma.param_shapes(config), images, tokens, tokens, valid).jaxpr


@pytest.mark.parametrize("name,text_len", [("nano-s-32", 32), ("nano-l-128", 48), ("3b-224", 32)])
def test_forward_flops_equal_the_models_matmuls(name, text_len):
    assert _matmul_flops(_model_jaxpr(name, text_len)) == forward_flops(get_config(name), text_len).forward


def test_backward_is_twice_the_forward():
    # Within 1%: the patch conv needs no input gradient and the embedding gather is no matmul.
    total = _matmul_flops(_model_jaxpr("nano-m-64", 32, grad=True))
    assert total == pytest.approx(flops_per_example(get_config("nano-m-64"), 32), rel=0.01)


def test_forward_flops_by_hand_on_a_toy_config():
    f = forward_flops(TOY, text_len=5)
    # ViT: n = 4 tokens; per token 14*14*3*8 (patch) + 2*(4*64 + 2*8*16) (blocks) + 8*6 (head).
    assert f.vit_matmul == 2 * 4 * (4704 + 2 * (256 + 256) + 48)
    assert f.vit_attention == 4 * 2 * 4 * 4 * 8
    # LLM: L = 4 + 5; per token 3 layers * (2*8*6 q/out + 2*4*6 k/v + 3*6*10 mlp).
    assert f.llm_matmul == 2 * 9 * 3 * (96 + 48 + 180)
    assert f.llm_attention == 4 * 3 * 81 * 8
    assert f.logits == 2 * 5 * 50 * 6
    assert flops_per_example(TOY, 5) == 3 * f.forward
    two = forward_flops(TOY, text_len=5, num_images=2)  # NLVR2-style: attention stays per image
    assert two.vit_matmul == 2 * f.vit_matmul and two.vit_attention == 2 * f.vit_attention


def test_flops_grow_with_size_resolution_and_text():
    for res in (224, 448, 896):
        f = [flops_per_example(config_for(s, res), 32) for s in ("3b", "10b", "28b")]
        assert f == sorted(f) and len(set(f)) == 3
    for size in ("3b", "10b", "28b", "nano-s"):
        res = (224, 448, 896) if size != "nano-s" else (32, 64, 128)
        f = [flops_per_example(config_for(size, r), 32) for r in res]
        assert f == sorted(f) and len(set(f)) == 3
    c = get_config("3b-224")
    assert flops_per_example(c, 64) > flops_per_example(c, 32)
    p = [param_count(config_for(s, 224)) for s in ("3b", "10b", "28b")]
    assert p == sorted(p)


@pytest.mark.parametrize("text_len", [32, PRETRAIN_TEXT_LEN])
def test_3b_224_to_448_ratio_near_table1(text_len):
    """Band: 4.6 x [0.75, 1.25] = [3.45, 5.75].

    Table 1 is measured TPU time, not FLOPs: at 448px the 1024 image tokens make attention (memory-
    bound, below matmul utilisation) a bigger share, so time grows faster than FLOPs; and the paper
    measured it with stage-dependent text lengths. A 25% band allows for that while still failing if
    the LLM sequence left out the image tokens (ratio ~3.0) or one long text_len of 512 swamped the
    image tokens (~2.1). It is a sanity band: the exact terms are checked by the hand-computed test.
    """
    entries = {e.config: e for e in cost_table(text_len)}
    ratio = entries["3b-448"].flops_per_example / entries["3b-224"].flops_per_example
    assert 3.45 <= ratio <= 5.75


def test_3b_to_10b_at_224_near_table1():
    # 3.7 in Table 1 and in the paper's text ("3.7x FLOPs"); same 25% band.
    ratio = flops_per_example(get_config("10b-224"), 32) / flops_per_example(get_config("3b-224"), 32)
    assert 3.7 * 0.75 <= ratio <= 3.7 * 1.25


def test_cost_table_entries_and_forms():
    entries = cost_table(32)
    assert [e.config for e in entries] == [f"{s}-{r}" for s in ("3b", "10b", "28b") for r in (224, 448, 896)]
    assert entries[0].relative_cost == 1.0 and entries[0].ratio == 1.0
    for e in entries:
        assert e.paper_relative_cost == TABLE1_RELATIVE_COST[e.size, e.resolution]
        assert e.ratio == pytest.approx(e.relative_cost / e.paper_relative_cost)
    records = json.loads(json.dumps(cost_table_json(entries)))
    assert {"config", "params", "flops_per_example"} <= set(records[0])
    assert records[1]["params"] == 3_032_979_696
    text = format_cost_table(entries)
    assert "| 3b | 3.03B | 1.00 / 1.0 (1.00) |" in text
    assert "| 10b-224 | 32 | 9,662,409,456 |" in text
    nano = cost_table(32, family="nano")
    assert all(e.paper_relative_cost is None and e.ratio is None for e in nano)
    assert "paper" not in format_cost_table(nano)


def test_cost_table_errors_name_what_was_expected():
    with pytest.raises(KeyError, match="unknown family 'paligemma3'"):
        cost_table(32, family="paligemma3")
    with pytest.raises(KeyError, match=r"no entry for resolution\(s\) \[896\]"):
        cost_table({224: 32, 448: 32})
    with pytest.raises(ValueError, match="text_len and num_images must be >= 1"):
        flops_per_example(get_config("3b-224"), 0)


def test_memory_plan_shards_state_over_devices():
    c = get_config("3b-224")
    one, many = memory_plan(c, 32, 256, "h100", 1), memory_plan(c, 32, 256, "h100", 64)
    assert one.state_bytes == 16 * param_count(c)  # fp32 params + grads + Adam mu, nu
    assert many.bytes_per_device < one.bytes_per_device and not one.fits
    n = min_devices(c, 32, 256, "h100")
    assert memory_plan(c, 32, 256, "h100", n).fits and not memory_plan(c, 32, 256, "h100", n // 2).fits
    big = min_devices(get_config("28b-896"), 32, 256, "h100")
    assert big is not None and big > n
    assert min_devices(get_config("28b-896"), 32, 256, "tpu-v5e", max_devices=8) is None
    with pytest.raises(KeyError, match="unknown device 'tpu-v9'"):
        memory_plan(c, 32, 256, "tpu-v9", 8)


def test_more_text_costs_more_memory():
    c = get_config("10b-448")
    short, long = memory_plan(c, 32, 64, "tpu-v5p", 64), memory_plan(c, 512, 64, "tpu-v5p", 64)
    assert long.activation_bytes_per_example > short.activation_bytes_per_example
    assert dataclasses.replace(short, device_bytes=short.bytes_per_device - 1).fits is False
