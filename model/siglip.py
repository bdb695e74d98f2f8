"""SigLIP ViT image encoder with the PaliGemma linear projector (`head`).

Module and parameter names mirror big_vision's `models/vit.py` with `scan=True`, so a released `.npz`
loads by renaming only (docs/paligemma2-facts.md §1.2, §1.5): `embedding`, `pos_embedding`,
`Transformer/encoderblock/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}`
(stacked on a leading depth axis), `Transformer/encoder_norm`, `head`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import precision
from model import remat as remat_policies
from model.attention import fused_attention, use_fused
from model.config import VisionConfig

# flax's LayerNorm default, which big_vision's ViT uses (docs/paligemma2-facts.md §1.2).
LAYER_NORM_EPS = 1e-6


def normalize_images(images: Any) -> Any:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1), the encoder's input range (docs/paligemma2-facts.md
    §1.2); float images pass through as they are.

    Works on numpy and JAX arrays alike, so the jitted train and decode steps call it on the device: the
    host moves a quarter of the bytes float32 would take."""
    if jnp.dtype(images.dtype) != jnp.uint8:
        return images
    return images.astype(jnp.float32) / 127.5 - 1.0


# lax.dot_general for flax's Dense*, returning lhs's dtype, accumulated in float32; written per backend
# (model/precision.py: cast from a float32 product on CPU, a native bfloat16 dot on accelerators).
dot_general = precision.dot_general


class MlpBlock(nn.Module):
    """Dense -> gelu (tanh approximation, flax's default) -> Dense."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6),
                    dot_general=dot_general)
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="Dense_0", **init)(x)
        x = nn.gelu(x, approximate=True)
        return nn.Dense(width, dtype=self.dtype, name="Dense_1", **init)(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with flax's MultiHeadDotProductAttention parameter layout.

    Written out (not flax's module) so the softmax runs in float32 whatever the compute dtype.
    """

    num_heads: int
    dtype: Any = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        head_dim = width // self.num_heads
        dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name,
                                             kernel_init=nn.initializers.xavier_uniform(), dot_general=dot_general)
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
        if use_fused(self.attention_impl, None):
            out = fused_attention(q * jnp.asarray(head_dim**-0.5, q.dtype), k, v, None)
        else:
            logits = precision.einsum_f32("bqhd,bkhd->bhqk", q * head_dim**-0.5, k)
            probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
            out = precision.einsum("bhqk,bkhd->bqhd", probs, v)
        return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out", dot_general=dot_general,
                               kernel_init=nn.initializers.xavier_uniform())(out)


class Encoder1DBlock(nn.Module):
    """Pre-LN transformer block; the (carry, None) signature is what nn.scan expects."""

    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="LayerNorm_0")(x)
        x = x + SelfAttention(self.num_heads, self.dtype, self.attention_impl,
                              name="MultiHeadDotProductAttention_0")(y)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="LayerNorm_1")(x)
        x = x + MlpBlock(self.mlp_dim, self.dtype, name="MlpBlock_0")(y)
        return x, None


class Encoder(nn.Module):
    """The stack of blocks, scanned over depth (params stacked on axis 0), then the final LayerNorm."""

    config: VisionConfig
    dtype: Any = jnp.float32
    remat: bool | str = False  # a model/remat.py policy name, or False / True for "dots" / "full"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # What each layer keeps for the backward pass (model/remat.py). The default ("dots") keeps each
        # layer's matmul outputs and recomputes the element-wise rest: less memory than keeping
        # everything, and faster on CPU. "full" keeps nothing per layer (big_vision's nothing_saveable).
        block = nn.remat(Encoder1DBlock, prevent_cse=False, policy=remat_policies.policy(self.remat))
        scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=nn.broadcast, length=self.config.depth)
        x, _ = scanned(self.config.mlp_dim, self.config.num_heads, self.dtype, self.config.attention_impl,
                       name="encoderblock")(x, None)
        return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="encoder_norm")(x)


class PatchEmbedding(nn.Module):
    """A p x p, stride p, VALID convolution (kernel [p, p, 3, width] as big_vision's `embedding`),
    computed as one matmul over flattened patches, which XLA runs faster on CPU than the conv."""

    width: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p, (b, h, w, c) = self.patch_size, images.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
                            (p, p, c, self.width))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.width,))
        patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, (h // p) * (w // p), p * p * c)
        kernel = kernel.reshape(p * p * c, self.width).astype(self.dtype)
        return dot_general(patches, kernel, (((2,), (0,)), ((), ()))) + bias.astype(self.dtype)


class SigLIP(nn.Module):
    """Image [B, H, W, 3] in [-1, 1] -> image tokens [B, (H/p)*(W/p), out_dim] in the LLM's width."""

    config: VisionConfig
    out_dim: int
    dtype: Any = jnp.float32
    remat: bool | str = False

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        if images.shape[1:] != (c.image_size, c.image_size, 3):
            raise ValueError(f"images: expected [B, {c.image_size}, {c.image_size}, 3], got {images.shape}")
        x = PatchEmbedding(c.width, c.patch_size, self.dtype, name="embedding")(images.astype(self.dtype))
        # Learned position embedding, big_vision's `posemb='learn'` init (normal, std 1/sqrt(width)).
        pos = self.param("pos_embedding", nn.initializers.normal(stddev=c.width**-0.5),
                         (1, c.num_patches, c.width))
        x = x + pos.astype(self.dtype)
        x = Encoder(c, self.dtype, self.remat, name="Transformer")(x)
        # The projector: big_vision's ViT classification head with pool_type='none', applied per token
        # and zero-initialised as in big_vision (docs/paligemma2-facts.md §0.4).
        return nn.Dense(self.out_dim, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")(x)
