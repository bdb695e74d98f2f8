"""Named rematerialisation policies for the scanned ViT and LLM blocks.

Each block runs under `nn.remat` with one of these `jax.checkpoint` policies, chosen per module
(PaliGemma.remat_img / remat_llm, TrainConfig.remat_img / remat_llm):

- "none": keep every intermediate (no recomputation; most memory).
- "dots": keep the outputs of every matmul, recompute the element-wise rest (norms, gelu, rope,
  softmax). The default: on the CPU faster than "none" and it uses less memory.
- "dots_no_batch": keep only matmuls without batch dimensions, i.e. the weight projections; the
  attention products (batched over examples and heads, [B, heads, T, S]) are recomputed. The
  attention probabilities are what grows with the square of the sequence (4,096 image tokens at 896).
- "full": keep nothing but each block's input (big_vision's nothing_saveable; least memory, the
  whole forward runs twice).

The legacy `remat` flag maps False to "dots" and True to "full".
"""

from __future__ import annotations

import jax

from model.precision import EINSUM_F32_NAME

_policies = jax.checkpoint_policies
POLICIES = {
    "none": _policies.everything_saveable,
    # precision.einsum_f32 in the native mode is a custom_vjp, not a dot: it is kept by name.
    "dots": _policies.save_from_both_policies(_policies.dots_saveable,
                                              _policies.save_only_these_names(EINSUM_F32_NAME)),
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def policy_name(remat: bool | str) -> str:
    """A policy name from a name or the legacy flag, with an error naming the choices."""
    if isinstance(remat, bool):
        return "full" if remat else "dots"
    if remat not in POLICIES:
        raise ValueError(f"remat policy {remat!r}: expected one of {sorted(POLICIES)} (or a bool)")
    return remat


def policy(remat: bool | str):
    """The jax.checkpoint policy for a name or the legacy flag."""
    return POLICIES[policy_name(remat)]
