"""Resample SigLIP's learned position embedding to another patch grid (big_vision `resample_posemb`).

Used when a model continues at a higher resolution (pretraining stage 2, or loading a checkpoint
for a resolution it was not trained at): the (g x g) grid of embeddings is resized bilinearly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def resample_posemb(posemb: jax.Array, num_patches: int) -> jax.Array:
    """(1, g*g, D) -> (1, num_patches, D), bilinear over the 2-D grid."""
    _, n, width = posemb.shape
    old, new = math.isqrt(n), math.isqrt(num_patches)
    if old * old != n or new * new != num_patches:
        raise ValueError(f"position embeddings must form square grids; got {n} -> {num_patches}")
    if old == new:
        return posemb
    grid = posemb.reshape(old, old, width)
    resized = jax.image.resize(grid.astype(jnp.float32), (new, new, width), method="bilinear")
    return resized.reshape(1, new * new, width).astype(posemb.dtype)
