"""Where a train step's work goes, from its program alone: no device, no parameters allocated.

    python -m bench.step_hlo --config 3b-224 --batch 32 --text-len 64 [--matmul cast|native]

Traces the trainer's step (harness/cell/train.py: loss, backward, optimizer) on abstract inputs
(jax.ShapeDtypeStruct) and walks the jaxpr, scan bodies multiplied by their length, remat
recomputation included. Prints, per component (ViT matmuls, ViT attention, LLM matmuls, LLM attention,
vocabulary logits + loss, optimizer, other): the matmul FLOPs by operand dtypes (a float32 operand
makes XLA run the product in float32: TF32 at best on a GPU), the bytes written by element-wise ops
(an unfused upper bound on their memory traffic) and by dtype casts. With --cost it also prints
XLA's cost_analysis of the lowered program. The `--matmul` mode is model/precision.py's.
"""

from __future__ import annotations

import argparse
import collections
import os

import jax
import jax.numpy as jnp
import numpy as np

from harness.cell.train import TrainConfig, build_model, make_optimizer, make_train_step
from model.config import get_config
from model.cost import forward_flops
from model.paligemma import param_shapes

COMPONENTS = ("vit matmul", "vit attention", "llm matmul", "llm attention", "logits + loss", "optimizer",
              "other")


def component(name: str, attention: bool) -> str:
    """The component a traced op belongs to, from its flax/jax name stack (`attention`: a dot with batch
    dimensions, i.e. q.k or p.v, or an element-wise op inside an attention module)."""
    if "logits" in name or "token_losses" in name:
        return "logits + loss"
    if "jvp(" not in name and "transpose(" not in name and "PaliGemma" not in name and "encoderblock" not in name \
            and "layers/" not in name:
        return "optimizer"
    vit = "img/" in name or "encoderblock" in name
    if attention:
        return "vit attention" if vit else "llm attention"
    if vit:
        return "vit matmul"
    if "layers/" in name or "llm" in name:
        return "llm matmul"
    return "other"


def dot_flops(eqn) -> float:
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2.0 * np.prod(out, dtype=np.float64) * np.prod([lhs[i] for i in lc], dtype=np.float64)


def walk(jaxpr, prefix: str, times: float, stats: dict) -> None:
    for eqn in jaxpr.eqns:
        name = prefix + "/" + str(eqn.source_info.name_stack)
        prim = eqn.primitive.name
        if prim == "dot_general":
            batched = bool(eqn.params["dimension_numbers"][1][0])
            dtypes = " x ".join(jnp.dtype(v.aval.dtype).name for v in eqn.invars)
            stats["flops"][component(name, batched), dtypes] += times * dot_flops(eqn)
        elif eqn.outvars and hasattr(eqn.outvars[0].aval, "shape"):
            nbytes = sum(np.prod(v.aval.shape, dtype=np.float64) * v.aval.dtype.itemsize
                         for v in eqn.outvars if isinstance(getattr(v.aval, "dtype", None), np.dtype))
            key = "casts" if prim == "convert_element_type" else "elementwise"
            attention = "/attn/" in name or "MultiHeadDotProductAttention" in name
            stats[key][component(name, attention)] += times * nbytes
        length = eqn.params.get("length", 1) if prim == "scan" else 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            walk(sub, name, times * length, stats)


def step_stats(config_name: str, batch: int, text_len: int, cfg: TrainConfig) -> dict:
    config = get_config(config_name)
    params = param_shapes(config)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.dtype(cfg.param_dtype)), params)
    tx = make_optimizer(params, cfg)
    opt_state = jax.eval_shape(tx.init, params)
    res = config.vision.image_size
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
    batch_spec = dict(image=spec((batch, res, res, 3), jnp.float32), text=spec((batch, text_len + 1), jnp.int32),
                      mask_ar=spec((batch, text_len + 1), jnp.int32),
                      mask_input=spec((batch, text_len + 1), jnp.int32),
                      mask_loss=spec((batch, text_len + 1), jnp.int32))
    step = make_train_step(build_model(config, cfg), tx, cfg.label_smoothing, loss_impl=cfg.loss_impl)
    args = (params, opt_state, batch_spec, jax.random.key(0))
    closed = jax.make_jaxpr(step)(*args)
    stats = dict(flops=collections.Counter(), elementwise=collections.Counter(), casts=collections.Counter())
    walk(closed.jaxpr, "", 1.0, stats)
    stats["model_flops"] = batch * forward_flops(config, text_len).training
    stats["step"], stats["args"] = step, args
    return stats


def report(stats: dict) -> str:
    flops = stats["flops"]
    total = sum(flops.values())
    lines = [f"model FLOPs (model/cost.py): {stats['model_flops'] / 1e12:.1f} TFLOP; traced matmul FLOPs "
             f"(with remat recomputation): {total / 1e12:.1f} TFLOP",
             "", "| component | matmul TFLOP | share | by operand dtypes (TFLOP) | element-wise GB written "
             "| casts GB |", "|---|---|---|---|---|---|"]
    for comp in COMPONENTS:
        parts = {d: f for (c, d), f in flops.items() if c == comp}
        sub = sum(parts.values())
        by_dtype = ", ".join(f"{d}: {f / 1e12:.2f}" for d, f in sorted(parts.items(), key=lambda x: -x[1]))
        lines.append(f"| {comp} | {sub / 1e12:.2f} | {sub / max(total, 1):.1%} | {by_dtype or '-'} | "
                     f"{stats['elementwise'][comp] / 1e9:.1f} | {stats['casts'][comp] / 1e9:.1f} |")
    f32 = sum(f for (_, d), f in flops.items() if "float32" in d)
    lines.append(f"\nmatmul FLOPs with a float32 operand (run as float32/TF32 products): {f32 / 1e12:.1f} TFLOP "
                 f"= {f32 / max(total, 1):.0%}")
    return "\n".join(lines)


def measured_split(config_name: str, batch: int, text_len: int, cfg: TrainConfig, repeats: int = 3) -> str:
    """Seconds of the loss alone, loss + gradient, and the whole step, on this backend with real arrays
    (random init): the backward pass and the optimizer by difference. For small configs."""
    from bench.common import CONFIG as BENCH_CONFIG
    from bench.common import timed
    from harness.cell.train import cast_params, make_loss_fn
    from model.paligemma import init_params
    from model.testing import random_inputs

    config = BENCH_CONFIG if config_name == "bench" else get_config(config_name)
    params = cast_params(init_params(config, jax.random.key(0)), cfg.param_dtype)
    images, tokens, mask_ar, mask_input = random_inputs(config, [text_len // 2] * batch,
                                                        [text_len + 1 - text_len // 2] * batch, text_len + 1)
    data = dict(image=images, text=tokens, mask_ar=mask_ar, mask_input=mask_input, mask_loss=mask_ar * mask_input)
    data = jax.tree.map(jnp.asarray, data)
    model = build_model(config, cfg)
    loss_fn = make_loss_fn(model, cfg.label_smoothing, loss_impl=cfg.loss_impl)
    rng = jax.random.key(0)
    fwd = jax.jit(loss_fn)
    grad = jax.jit(jax.value_and_grad(loss_fn))
    tx = make_optimizer(params, cfg)
    step = make_train_step(model, tx, cfg.label_smoothing, loss_impl=cfg.loss_impl)
    state = [params, tx.init(params)]

    def run_step():
        state[0], state[1], stats = step(state[0], state[1], data, rng)
        stats["loss"].block_until_ready()

    t_fwd = timed(lambda: fwd(params, data, rng).block_until_ready(), repeats)
    t_grad = timed(lambda: grad(params, data, rng)[0].block_until_ready(), repeats)
    t_step = timed(run_step, repeats)
    rows = [("forward (loss)", t_fwd), ("backward (loss + gradient - forward)", t_grad - t_fwd),
            ("optimizer + rest (step - loss + gradient)", t_step - t_grad), ("whole step", t_step)]
    return "\n".join(["| part | ms | share |", "|---|---|---|"] +
                     [f"| {name} | {sec * 1e3:.1f} | {sec / t_step:.0%} |" for name, sec in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="3b-224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--compute-dtype", default="bfloat16")
    parser.add_argument("--param-dtype", default="float32")
    parser.add_argument("--loss-impl", default="auto")
    parser.add_argument("--remat-llm", default=None)
    parser.add_argument("--matmul", choices=("cast", "native"), default=None,
                        help="model/precision.py's mode (default: this backend's)")
    parser.add_argument("--cost", action="store_true", help="also print XLA's cost_analysis of the lowered step")
    parser.add_argument("--time", action="store_true",
                        help="also time forward / backward / optimizer on this backend (small configs; 'bench' "
                             "is bench/common.py's)")
    a = parser.parse_args(argv)
    if a.matmul:
        os.environ["PALIGEMMA_MATMUL"] = a.matmul
    cfg = TrainConfig(lr=1e-5, num_steps=100, compute_dtype=a.compute_dtype, param_dtype=a.param_dtype,
                      loss_impl=a.loss_impl, remat_llm=a.remat_llm)
    if a.time:
        print(f"{a.config}, batch {a.batch}, text_len {a.text_len}, {a.compute_dtype}, loss {a.loss_impl}, "
              f"on {jax.default_backend()}:")
        print(measured_split(a.config, a.batch, a.text_len, cfg))
        if a.config == "bench":
            return
    stats = step_stats(a.config, a.batch, a.text_len, cfg)
    print(f"{a.config}, batch {a.batch}, text_len {a.text_len}, compute {a.compute_dtype}, params "
          f"{a.param_dtype}, loss {a.loss_impl}, matmul mode {os.environ.get('PALIGEMMA_MATMUL', 'backend default')}")
    print(report(stats))
    if a.cost:
        cost = jax.jit(stats["step"]).lower(*stats["args"]).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        print(f"\nXLA cost_analysis (lowered, unoptimised): flops {cost.get('flops', 0) / 1e12:.1f} T, "
              f"bytes accessed {cost.get('bytes accessed', 0) / 1e9:.1f} GB, "
              f"transcendentals {cost.get('transcendentals', 0) / 1e9:.2f} G")


if __name__ == "__main__":
    main()
