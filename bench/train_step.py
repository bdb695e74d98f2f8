"""Our train step vs transformers', on whatever backend is present: examples/s, MFU, peak memory.

    python -m bench.train_step --config 3b-224 --batch 32              # on a GPU
    python -m bench.train_step --config bench --batch 8 --dtype float32  # the CPU (2 cores: minutes)

Ours is the trainer's own step (harness/cell/train.py: clip + Adam + weight decay + schedule, dropout off)
with this backend's defaults (model/precision.py matmul mode, fused attention where allowed, the
loss_impl 'auto' rule) unless flags say otherwise; theirs is PaliGemmaForConditionalGeneration
with Adam, bfloat16 autocast over float32 weights (like ours) and its default attention. Both run
one batch of random inputs (half prefix, half suffix) and random weights: the same weights for the
small 'bench' config (bench/common.py), each side's own init for a named
config (3b-224 ...), as speed does not depend on the values.

MFU = model FLOPs (model/cost.py: 3 x forward matmuls, no remat recomputation) / seconds / peak.
Peaks: the device's dense bfloat16 spec (SPEC_PEAK_BF16) and a square jnp.dot measured in the same
run (bfloat16 8192^3 on an accelerator, float32 2048^3 on the CPU). Peak memory: jax's
memory_stats()['peak_bytes_in_use'] and torch.cuda.max_memory_allocated on a GPU; on the CPU the
process's ru_maxrss after each side (a high-water mark: the second figure includes the first).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import CONFIG as BENCH_CONFIG
from bench.common import hf_train_step, timed
from harness.cell.train import TrainConfig, build_model, make_optimizer, make_train_step
from model.checkpoint import load
from model.config import get_config
from model.cost import forward_flops
from model.paligemma import init_params
from model.testing import hf_config, random_hf_model, random_inputs

# Dense (no sparsity) bfloat16 tensor-core peaks, FLOP/s, from the vendors' data sheets: NVIDIA H100
# SXM and H200 (same GH100 compute: "BF16 Tensor Core 1,979 TFLOPS" with sparsity, 989 dense),
# https://www.nvidia.com/en-us/data-center/h200/ and /h100/; A100: 312 dense,
# https://www.nvidia.com/en-us/data-center/a100/. Keys are matched against jax's device_kind.
SPEC_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def spec_peak(device_kind: str) -> float | None:
    for name, peak in SPEC_PEAK_BF16.items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def matmul_peak(accelerator: bool) -> tuple[float, str]:
    """FLOP/s of one square jnp.dot: bfloat16 8192^3 on an accelerator, float32 2048^3 on the CPU."""
    n, dtype = (8192, jnp.bfloat16) if accelerator else (2048, jnp.float32)
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    f = jax.jit(jnp.dot)
    return 2 * n**3 / timed(lambda: f(a, a).block_until_ready(), 5), f"{jnp.dtype(dtype).name} {n}^3 jnp.dot"


def peak_memory_ours() -> str:
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return f"{stats['peak_bytes_in_use'] / 2**30:.2f} GiB (jax peak_bytes_in_use)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process ru_maxrss)"


def peak_memory_theirs(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (torch max_memory_allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process ru_maxrss, both sides)"


def ours_seconds(config, params, batch, cfg: TrainConfig, repeats: int) -> float:
    images, tokens, mask_ar, mask_input = batch
    data = dict(image=jnp.asarray(images), text=jnp.asarray(tokens), mask_ar=jnp.asarray(mask_ar),
                mask_input=jnp.asarray(mask_input), mask_loss=jnp.asarray(mask_ar * mask_input))
    tx = make_optimizer(params, cfg)
    step = make_train_step(build_model(config, cfg), tx, cfg.label_smoothing, loss_impl=cfg.loss_impl)
    state = [params, tx.init(params)]
    rng = jax.random.key(0)

    def run():
        state[0], state[1], stats = step(state[0], state[1], data, rng)
        stats["loss"].block_until_ready()

    return timed(run, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench", help="'bench' (bench/common.py) or a "
                        "model config name such as 3b-224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=64, help="text positions the model sees")
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype of both sides (params stay float32 "
                        "unless --param-dtype)")
    parser.add_argument("--param-dtype", default="float32")
    parser.add_argument("--loss-impl", default="auto")
    parser.add_argument("--remat-img", default=None)
    parser.add_argument("--remat-llm", default=None)
    parser.add_argument("--attn-softcap", choices=("on", "off"), default="on",
                        help="the LLM's attention soft-cap (off allows the fused attention path)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true")
    a = parser.parse_args(argv)

    backend = jax.default_backend()
    device_kind = jax.devices()[0].device_kind
    accelerator = backend != "cpu"
    print(f"jax {jax.__version__} on {backend} ({device_kind}, {jax.device_count()} device(s)); "
          f"load average {os.getloadavg()}")
    named = a.config != "bench"
    config = get_config(a.config) if named else BENCH_CONFIG
    if a.attn_softcap == "off":
        config = config.with_llm(attn_logits_softcap=None)
    print(f"config {a.config}: {dataclasses.asdict(config)}")

    device, hf = "cpu", None
    if not a.skip_transformers:
        import torch

        device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
    if named:
        params = init_params(config, jax.random.key(0))
        if not a.skip_transformers:
            import transformers

            hf = transformers.PaliGemmaForConditionalGeneration(hf_config(config))
    else:
        hf = random_hf_model(config, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(tmp)
            loaded, params = load(tmp)
        config = dataclasses.replace(loaded, name="bench")
        params = jax.tree.map(jnp.asarray, params)
        if a.skip_transformers:
            hf = None

    peak, peak_what = matmul_peak(accelerator)
    spec = spec_peak(device_kind)
    print(f"matmul peak measured ({peak_what}): {peak / 1e12:.3f} TFLOP/s; spec bf16 dense peak: "
          f"{'n/a' if spec is None else f'{spec / 1e12:.0f} TFLOP/s'}")

    b, t = a.batch, a.text_len
    half = (t + 1) // 2
    batch = random_inputs(config, [half] * b, [t + 1 - half] * b, t + 1, seed=1)
    cfg = TrainConfig(lr=1e-4, num_steps=1000, compute_dtype=a.dtype, param_dtype=a.param_dtype,
                      loss_impl=a.loss_impl, remat_img=a.remat_img, remat_llm=a.remat_llm)
    if a.param_dtype != "float32":
        params = jax.tree.map(lambda x: x.astype(a.param_dtype), params)
    flops = b * forward_flops(config, t).training
    print(f"train step, batch {b}, {t} text positions, compute {a.dtype}, params {a.param_dtype}, "
          f"loss {a.loss_impl}, remat img/llm {a.remat_img}/{a.remat_llm}, model FLOPs {flops / 1e12:.3f} T")

    ours = ours_seconds(config, params, batch, cfg, a.repeats)
    del params
    mfu = f"MFU {flops / ours / spec:.1%} of spec, " if spec else ""
    print(f"  ours:         {b / ours:8.2f} examples/s  {flops / ours / 1e12:.3f} TFLOP/s  {mfu}"
          f"{flops / ours / peak:.1%} of the measured matmul peak; peak memory {peak_memory_ours()}")
    if hf is None:
        return
    hf = hf.to(device)
    theirs = hf_train_step(config, hf, batch, a.repeats, jnp.dtype(a.dtype), device=device)
    mfu = f"MFU {flops / theirs / spec:.1%} of spec, " if spec else ""
    print(f"  transformers: {b / theirs:8.2f} examples/s  {flops / theirs / 1e12:.3f} TFLOP/s  {mfu}"
          f"{flops / theirs / peak:.1%} of the measured matmul peak; peak memory {peak_memory_theirs(device)}")
    print(f"  ratio ours/transformers: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
