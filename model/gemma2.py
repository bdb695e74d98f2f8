"""Gemma 2 decoder (also Gemma 1, with post norms and soft-caps off) with an explicit KV cache.

Names mirror big_vision's `models/ppp/gemma.py` with scan=True (paligemma2-facts.md §1.3, §1.5):
`embedder/input_embedding`, `layers/{pre_attention_norm, attn/{q_einsum|qkv_einsum, kv_einsum,
attn_vec_einsum}, post_attention_norm, pre_ffw_norm, mlp/{gating_einsum, linear}, post_ffw_norm}`
stacked on a leading depth axis, and `final_norm`.

The layers run under nn.scan, so compile time does not grow with depth. What differs between
layers (sliding vs global attention) enters as a scanned boolean. The KV cache for all layers,
[depth, B, S, kv_heads, head_dim], rides in the scan carry and each layer writes its own slice in place.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.config import LLMConfig

# Masked attention logits get this instead of -inf, so a fully masked row (padding) gives a uniform
# softmax rather than NaN, as big_vision does (paligemma2-facts.md §1.3).
MASKED_LOGIT = -2.3819763e38

KVCache = tuple[jax.Array, jax.Array]


def sliding_layers(config: LLMConfig) -> np.ndarray:
    """bool[depth]: which layers see only `sliding_window` positions.

    transformers' Gemma2Config marks layer i as sliding iff (i + 1) % 2, i.e. the even indices;
    with sliding_window None (big_vision, paligemma2-facts.md §0.7) every layer is global.
    """
    if config.sliding_window is None:
        return np.zeros(config.depth, bool)
    return np.arange(config.depth) % 2 == 0


def rope_tables(positions: jax.Array, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
    """(sin, cos) of shape [B, T, 1, head_dim/2] for split-half rotary embedding."""
    fraction = 2 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
    angles = positions[..., None].astype(jnp.float32) / base**fraction
    return jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotates the two halves of the last axis: [x1 cos - x2 sin, x2 cos + x1 sin] (float32 math)."""
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def soft_cap(x: jax.Array, cap: float | None) -> jax.Array:
    return x if cap is None else cap * jnp.tanh(x / cap)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + scale), in float32; `scale` starts at 0."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + scale)).astype(x.dtype)


class Einsum(nn.Module):
    """A weight `w` of a fixed shape, contracted with the input by an einsum equation."""

    shape: tuple[int, ...]
    w_init: Any
    dtype: Any

    @nn.compact
    def __call__(self, equation: str, x: jax.Array) -> jax.Array:
        w = self.param("w", self.w_init, self.shape)
        return jnp.einsum(equation, x, w.astype(self.dtype))


class Attention(nn.Module):
    """GQA (MQA when kv_heads=1, one qkv_einsum when kv_heads=heads) with RoPE, query scaling by
    query_pre_attn_scalar**-0.5 and an optional tanh soft-cap on the logits (float32)."""

    config: LLMConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, sin: jax.Array, cos: jax.Array, mask: jax.Array,
                 cache: KVCache | None, end: jax.Array | None) -> tuple[jax.Array, KVCache]:
        c = self.config
        n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.width
        lecun = nn.initializers.lecun_normal
        if n == k:
            qkv = Einsum((3, n, d, h), lecun(in_axis=2, out_axis=(1, 3), batch_axis=0), self.dtype,
                         name="qkv_einsum")("btd,cndh->cbtnh", x)
            q, key, value = qkv[0], qkv[1], qkv[2]
        else:
            q = Einsum((n, d, h), lecun(in_axis=1, out_axis=(0, 2)), self.dtype, name="q_einsum")("btd,ndh->btnh", x)
            kv = Einsum((2, k, d, h), lecun(in_axis=2, out_axis=(1, 3), batch_axis=0), self.dtype,
                        name="kv_einsum")("btd,ckdh->cbtkh", x)
            key, value = kv[0], kv[1]
        q = apply_rope(q, sin, cos) * jnp.asarray(c.query_pre_attn_scalar**-0.5, self.dtype)
        key = apply_rope(key, sin, cos)
        new = (key, value)
        if cache is not None:  # Write this call's tokens at slot `end`, then attend over the whole cache.
            key = jax.lax.dynamic_update_slice(cache[0], key.astype(cache[0].dtype), (0, end, 0, 0))
            value = jax.lax.dynamic_update_slice(cache[1], value.astype(cache[1].dtype), (0, end, 0, 0))
            key, value = key.astype(self.dtype), value.astype(self.dtype)
        b, t = q.shape[:2]
        q = q.reshape(b, t, k, n // k, h)
        logits = jnp.einsum("btkgh,bskh->bkgts", q, key, preferred_element_type=jnp.float32)
        logits = soft_cap(logits, c.attn_logits_softcap)
        logits = jnp.where(mask[:, None, None], logits, MASKED_LOGIT)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bkgts,bskh->btkgh", probs, value).reshape(b, t, n, h)
        out = Einsum((n, h, d), lecun(in_axis=(0, 1), out_axis=2), self.dtype,
                     name="attn_vec_einsum")("btnh,nhd->btd", out)
        return out, new


class FeedForward(nn.Module):
    """Gated GELU: (gelu_tanh(x W_gate) * x W_up) W_down; gating_einsum[0] is the gate."""

    config: LLMConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d, f = self.config.width, self.config.mlp_dim
        lecun = nn.initializers.lecun_normal
        gating = self.param("gating_einsum", lecun(in_axis=1, out_axis=2, batch_axis=0), (2, d, f))
        linear = self.param("linear", lecun(in_axis=0, out_axis=1), (f, d))
        gate_up = jnp.einsum("btd,cdf->cbtf", x, gating.astype(self.dtype))
        hidden = nn.gelu(gate_up[0], approximate=True) * gate_up[1]
        return jnp.einsum("btf,fd->btd", hidden, linear.astype(self.dtype))


class Block(nn.Module):
    """One decoder layer. Scanned: carry = (x, cache of all layers), xs = (layer index, is_sliding)."""

    config: LLMConfig
    dtype: Any
    dropout: float
    deterministic: bool

    @nn.compact
    def __call__(self, carry, xs, shared):
        x, cache = carry
        layer, is_sliding = xs
        c = self.config
        mask = shared["mask"]
        if shared["sliding_mask"] is not None:
            mask = jnp.where(is_sliding, shared["sliding_mask"], mask)
        layer_cache = None if cache is None else (cache[0][layer], cache[1][layer])

        y = RMSNorm(c.norm_eps, name="pre_attention_norm")(x)
        y, (key, value) = Attention(c, self.dtype, name="attn")(
            y, shared["sin"], shared["cos"], mask, layer_cache, shared["end"])
        if c.post_norms:
            y = RMSNorm(c.norm_eps, name="post_attention_norm")(y)
        x = x + nn.Dropout(self.dropout)(y, deterministic=self.deterministic)

        y = RMSNorm(c.norm_eps, name="pre_ffw_norm")(x)
        y = FeedForward(c, self.dtype, name="mlp")(y)
        if c.post_norms:
            y = RMSNorm(c.norm_eps, name="post_ffw_norm")(y)
        x = x + nn.Dropout(self.dropout)(y, deterministic=self.deterministic)

        if cache is not None:
            start = (layer, 0, shared["end"], 0, 0)
            cache = (jax.lax.dynamic_update_slice(cache[0], key[None].astype(cache[0].dtype), start),
                     jax.lax.dynamic_update_slice(cache[1], value[None].astype(cache[1].dtype), start))
        return (x, cache), None


class Gemma2(nn.Module):
    """Embeds text, runs the decoder stack on any embedded sequence, and computes tied logits."""

    config: LLMConfig
    dtype: Any = jnp.float32
    dropout: float = 0.0
    remat: bool = False

    def setup(self):
        # big_vision's Embedder init (normal, std 0.01); only the loader's values matter in practice.
        self.embedder = Embedder(self.config.vocab_size, self.config.width)
        self.final_norm = RMSNorm(self.config.norm_eps)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """Text tokens -> embeddings times sqrt(width). Image tokens never pass through here (§0.3)."""
        x = self.embedder.table[tokens].astype(self.dtype)
        return x * jnp.asarray(np.sqrt(self.config.width), self.dtype)

    def logits(self, h: jax.Array) -> jax.Array:
        """Final-normed hidden states -> float32 logits through the tied embedding, then the soft-cap."""
        table = self.embedder.table.astype(self.dtype)
        logits = jnp.einsum("...d,vd->...v", h, table, preferred_element_type=jnp.float32)
        return soft_cap(logits, self.config.final_logits_softcap)

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array, sliding_mask: jax.Array | None,
                 *, cache: KVCache | None = None, cache_end: jax.Array | None = None,
                 deterministic: bool = True) -> tuple[jax.Array, KVCache | None]:
        """x [B, T, D] embedded inputs, positions int[B, T], mask bool[B, T, S] over the keys (S = T
        without a cache, the cache length with one), sliding_mask the same for sliding layers.

        With `cache` (k, v each [depth, B, S, K, H]) this call's keys/values are written at slots
        [cache_end, cache_end + T) before attending. Returns final-normed hidden states and the cache.
        """
        c = self.config
        block = Block
        if self.remat:
            block = nn.remat(block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
        layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                         in_axes=(0, nn.broadcast), length=c.depth)(
            c, self.dtype, self.dropout, deterministic, name="layers")
        sin, cos = rope_tables(positions, c.head_dim, c.rope_base)
        use_sliding = sliding_mask is not None and sliding_layers(c).any()
        shared = dict(sin=sin, cos=cos, mask=mask, sliding_mask=sliding_mask if use_sliding else None,
                      end=cache_end)
        xs = (jnp.arange(c.depth), jnp.asarray(sliding_layers(c)))
        (x, cache), _ = layers((x.astype(self.dtype), cache), xs, shared)
        return self.final_norm(x), cache


class Embedder(nn.Module):
    vocab_size: int
    width: int

    def setup(self):
        self.table = self.param("input_embedding", nn.initializers.normal(stddev=0.01),
                                (self.vocab_size, self.width))
