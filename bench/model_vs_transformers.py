"""Our PaliGemma vs transformers' on the same model, same machine, same run.

    python -m bench.model_vs_transformers                      # the `bench` model (bench/common.py), ~1 min
    python -m bench.model_vs_transformers --config nano-s-32   # any model config by name

Prints examples/s for a training step (forward + backward + Adam update) and tokens/s for greedy
decoding at batch 1 and 8, the ratios ours/transformers, and our achieved FLOP/s as a fraction of a
jnp.dot peak measured in the same run. Both sides run float32 on the CPU with identical weights
(transformers' random model saved with save_pretrained and read by model.checkpoint.load).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from bench.common import CONFIG, hf_train_step, timed
from model.checkpoint import load
from model.config import PaliGemmaConfig, get_config
from model.decode import generate
from model.paligemma import PaliGemma
from model.testing import hf_inputs, random_hf_model, random_inputs


def dot_peak() -> float:
    n = 2048
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    f = jax.jit(jnp.dot)
    return 2 * n**3 / timed(lambda: f(a, a).block_until_ready(), 5)


def train_flops(config: PaliGemmaConfig, batch: int, text_len: int) -> float:
    """Matmul FLOPs of one training step: 3x the forward (backward = 2x forward)."""
    v, t = config.vision, config.llm
    n_img, seq = v.num_patches, v.num_patches + text_len
    vision = n_img * 2 * (v.patch_size**2 * 3 * v.width + v.depth * (4 * v.width**2 + 2 * v.width * v.mlp_dim)) \
        + v.depth * 4 * n_img**2 * v.width + 2 * n_img * v.width * t.width
    proj = (t.num_heads + 2 * t.num_kv_heads) * t.head_dim * t.width + t.num_heads * t.head_dim * t.width
    llm = seq * 2 * t.depth * (proj + 3 * t.width * t.mlp_dim) + t.depth * 4 * seq**2 * t.num_heads * t.head_dim \
        + text_len * 2 * t.width * t.vocab_size
    return 3 * batch * (vision + llm)


def loss_fn(logits, tokens, mask_loss):
    """Next-token cross-entropy on suffix tokens, averaged per example then over the batch."""
    logp = jax.nn.log_softmax(logits[:, :-1])
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    mask = mask_loss[:, 1:]
    return jnp.mean(jnp.sum(nll * mask, axis=1) / jnp.maximum(mask.sum(axis=1), 1))


def ours_train_step(config, params, batch, repeats, dtype):
    model = PaliGemma(config, dtype=dtype)
    tx = optax.adam(1e-4)
    images, tokens, mask_ar, mask_input = (jnp.asarray(x) for x in batch)
    mask_loss = mask_ar * mask_input

    @jax.jit
    def step(params, opt_state):
        def loss(p):
            return loss_fn(model.apply({"params": p}, images, tokens, mask_ar, mask_input), tokens, mask_loss)

        loss, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [jax.tree.map(jnp.asarray, params), None]
    state[1] = tx.init(state[0])

    def run():
        state[0], state[1], loss = step(state[0], state[1])
        loss.block_until_ready()

    return timed(run, repeats)


def prompts(config, batch, length, seed=0):
    images, tokens, mask_ar, mask_input = random_inputs(config, [length] * batch, [0] * batch, length, seed)
    return images, tokens, np.zeros_like(mask_ar), mask_input


def ours_decode(config, params, batch, length, new_tokens, repeats, dtype):
    params = jax.tree.map(jnp.asarray, params)
    args = prompts(config, batch, length)
    # eos_id -1 never matches, so every run generates exactly `new_tokens` tokens.
    return timed(lambda: generate(config, params, *args, max_decode_len=new_tokens, eos_id=-1, dtype=dtype),
                 repeats)


def hf_decode(config, model, batch, length, new_tokens, repeats, dtype):
    """float32, or the model cast to bfloat16 for dtype=bfloat16 (ours casts its weights too)."""
    inputs = hf_inputs(config, *prompts(config, batch, length))
    if dtype == jnp.bfloat16:
        model = copy.deepcopy(model).to(torch.bfloat16)
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)

    def run():
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens

    return timed(run, repeats)


def compare(name: str, ours: float, theirs: float, work: float, unit: str) -> float:
    """Prints both rates (work / seconds) and the ratio; returns ours in seconds."""
    print(f"  {name}: ours {work / ours:.2f} {unit}, transformers {work / theirs:.2f} {unit}, "
          f"ratio ours/transformers {theirs / ours:.2f}x")
    return ours


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench", help="'bench' (bench/common.py) or a model config name")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=32, help="prefix + suffix tokens per training example")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true",
                        help="also compare bfloat16 mixed precision (ours dtype=bfloat16, transformers autocast)")
    a = parser.parse_args(argv)
    base = CONFIG if a.config == "bench" else get_config(a.config)

    print(f"load average before: {os.getloadavg()}; jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"config: {dataclasses.asdict(base)}")
    hf = random_hf_model(base, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        config, params = load(tmp)
    config = dataclasses.replace(config, name=base.name)

    peak = dot_peak()
    print(f"jnp.dot peak (2048^2 float32): {peak / 1e9:.1f} GFLOP/s")
    b = a.train_batch
    half = a.text_len // 2
    batch = random_inputs(config, [half] * b, [a.text_len - half] * b, a.text_len, seed=1)
    flops = train_flops(config, b, a.text_len)
    for dtype in [jnp.float32] + [jnp.bfloat16] * a.bf16:
        print(f"{jnp.dtype(dtype).name}:")
        seconds = compare(f"train step (batch {b}, {a.text_len} text tokens)",
                          ours_train_step(config, params, batch, a.repeats, dtype),
                          hf_train_step(config, hf, batch, a.repeats, dtype), b, "examples/s")
        print(f"  ours: {flops / seconds / 1e9:.1f} GFLOP/s = {flops / seconds / peak:.0%} of the float32 peak")
        for n in (1, 8):
            ours = {k: ours_decode(config, params, n, a.prompt_len, k, a.repeats, dtype) for k in (1, a.new_tokens)}
            theirs = {k: hf_decode(config, hf, n, a.prompt_len, k, a.repeats, dtype) for k in (1, a.new_tokens)}
            what = f"batch {n}, {a.prompt_len}-token prompts"
            compare(f"greedy decode, end to end ({what}, {a.new_tokens} new tokens)", ours[a.new_tokens],
                    theirs[a.new_tokens], n * a.new_tokens, "tokens/s")
            # Prefill (image + prompt, compute-bound, the same matmuls on both sides) and the per-token
            # step after it, from the difference between generating 1 and new_tokens tokens.
            compare(f"  prefill + first token ({what})", ours[1], theirs[1], n, "prompts/s")
            steps = a.new_tokens - 1
            compare(f"  each further token ({what})", ours[a.new_tokens] - ours[1],
                    theirs[a.new_tokens] - theirs[1], n * steps, "tokens/s")
    print(f"load average after: {os.getloadavg()}")

if __name__ == "__main__":
    main()
