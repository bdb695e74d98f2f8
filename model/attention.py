"""The fused attention path: jax.nn.dot_product_attention, where the masks and soft-cap allow.

The dense path (model/gemma2.py, model/siglip.py) materialises float32 logits and probabilities
[B, heads, T, S] and keeps them for the backward pass. The fused path hands q, k, v and the boolean
mask to `jax.nn.dot_product_attention`: on a GPU its cuDNN flash kernel (implementation='cudnn'),
which never writes the T x S matrices to memory; elsewhere its XLA implementation (the same math as
the dense path, used to test this path on the CPU).

cuDNN's kernel has no tanh soft-cap on the logits, so Gemma 2's attention soft-cap (50) rules the
fused path out: it applies only when the recipe turns that cap off (`Recipe.attn_logits_softcap =
False`, which `harness.cell.run_cell.transfer_config` turns into `LLMConfig.attn_logits_softcap = None`).
SigLIP has no soft-cap, so its attention can always be fused.

`impl` is "dense", "fused", or None (per backend: fused on GPU where allowed, dense elsewhere, as on
the CPU the XLA implementation is the same work as the dense path).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLS = ("dense", "fused")


def check_impl(impl: str | None, softcap: float | None, field: str) -> None:
    """A clear error for an unknown impl, or for 'fused' together with an attention soft-cap."""
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"{field}: expected one of {IMPLS} or None, got {impl!r}")
    if impl == "fused" and softcap is not None:
        raise ValueError(f"{field}='fused' cannot apply the attention logit soft-cap ({softcap}); turn the "
                         "cap off (Recipe.attn_logits_softcap=False) or use attention_impl='dense'")


def use_fused(impl: str | None, softcap: float | None) -> bool:
    """Whether the fused path runs for this config on the current backend."""
    if impl is None:
        return softcap is None and jax.default_backend() == "gpu"
    return impl == "fused"


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """q [B, T, N, H] (already scaled), k and v [B, S, K, H] with N a multiple of K (GQA), mask
    bool[B, T, S] or None -> [B, T, N, H] in q's dtype. A fully masked row (padding) averages the
    values, as the dense path's finite MASKED_LOGIT does."""
    implementation = "cudnn" if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) \
        else "xla"
    return jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype),
                                        mask=None if mask is None else mask[:, None],
                                        scale=1.0, implementation=implementation)
