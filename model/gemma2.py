"""Gemma 2 decoder (also Gemma 1, with post norms and soft-caps off) with an explicit KV cache.

Names mirror big_vision's `models/ppp/gemma.py` with scan=True (docs/paligemma2-facts.md §1.3, §1.5):
`embedder/input_embedding`, `layers/{pre_attention_norm, attn/{q_einsum|qkv_einsum, kv_einsum,
attn_vec_einsum}, post_attention_norm, pre_ffw_norm, mlp/{gating_einsum, linear}, post_ffw_norm}`
stacked on a leading depth axis, and `final_norm`.

The layers run under nn.scan, so compile time does not grow with depth. What differs between
layers (sliding vs global attention) enters as a scanned boolean. Decoding steps instead loop over
layer weights sliced once beforehand, each layer with its own KV cache: keys [B, K, head_dim, S] and
values [B, K, S, head_dim], the layouts the two attention matmuls read without a transpose, so a step
writes one token per layer in place and copies nothing else.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model import precision
from model import remat as remat_policies
from model.attention import fused_attention, use_fused
from model.config import LLMConfig

# Masked attention logits get this instead of -inf, so a fully masked row (padding) gives a uniform
# softmax rather than NaN, as big_vision does (docs/paligemma2-facts.md §1.3).
MASKED_LOGIT = -2.3819763e38

# One layer's cache: keys [B, K, head_dim, S], values [B, K, S, head_dim].
KVCache = tuple[jax.Array, jax.Array]


def sliding_layers(config: LLMConfig) -> np.ndarray:
    """bool[depth]: which layers see only `sliding_window` positions.

    transformers' Gemma2Config marks layer i as sliding iff (i + 1) % 2, i.e. the even indices;
    with sliding_window None (big_vision, docs/paligemma2-facts.md §0.7) every layer is global.
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


# jnp.einsum returning the first operand's dtype, accumulated in float32; written per backend
# (model/precision.py: cast from a float32 product on CPU, a native bfloat16 dot on accelerators).
einsum = precision.einsum


def contract(x: jax.Array, w: jax.Array, n_lead: int) -> jax.Array:
    """x [B, T, d] times w [*lead, d, *rest] -> [B, T, *lead, *rest], lead = w's first n_lead axes.

    For one token per example (a decoding step) the product is a batched matmul over `lead` in the
    weight's own layout: a plain einsum would have XLA re-lay out the whole weight on every step,
    which costs more than the product. For sequences (training, prefill) the einsum lets XLA pick the
    layout for one large matmul (the batched form's broadcast would cost more there, above all in
    the backward pass).
    """
    lead, d, rest = w.shape[:n_lead], w.shape[n_lead], w.shape[n_lead + 1:]
    w3 = w.reshape(int(np.prod(lead)), d, int(np.prod(rest)))
    x2 = x.reshape(-1, d)
    if x.shape[1] == 1:
        xb = jnp.broadcast_to(x2, (w3.shape[0],) + x2.shape)
        out = jax.lax.dot_general(xb, w3, (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
        out = out.astype(x.dtype).transpose(1, 0, 2)
    else:
        out = einsum("md,cdr->mcr", x2, w3)
    return out.reshape(x.shape[:-1] + lead + rest)


def soft_cap(x: jax.Array, cap: float | None) -> jax.Array:
    return x if cap is None else cap * jnp.tanh(x / cap)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + scale), in float32; `scale` starts at 0.

    The scale is cast up before the `1 +`, as HF does (`1.0 + weight.float()`). Left in bfloat16, the
    sum's dtype depended on who computed it: a NumPy bfloat16 param (a loaded checkpoint, applied
    eagerly) gave float32 under ml-dtypes 0.6 but bfloat16 under 0.7 (NEP 50 weak scalars), which
    rounds away the scale's low bits: a 3e-3 logit difference from the float32 twin
    (tests/test_checkpoint_npz.py)."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


class Einsum(nn.Module):
    """A weight `w` of a fixed shape (big_vision's name for these projections)."""

    shape: tuple[int, ...]
    w_init: Any
    dtype: Any

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("w", self.w_init, self.shape).astype(self.dtype)


class Attention(nn.Module):
    """GQA (MQA when kv_heads=1, one qkv_einsum when kv_heads=heads) with RoPE, query scaling by
    query_pre_attn_scalar**-0.5 and an optional tanh soft-cap on the logits (float32)."""

    config: LLMConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, sin: jax.Array, cos: jax.Array, mask: jax.Array,
                 cache: KVCache | None, end: jax.Array | None) -> tuple[jax.Array, KVCache]:
        """Without a cache x attends to itself and this call's keys/values [B, T, K, H] come back;
        with one they are written into it at slot `end`, x attends over all of it, and the updated
        cache comes back."""
        c = self.config
        n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.width
        lecun = nn.initializers.lecun_normal
        if n == k:
            w = Einsum((3, n, d, h), lecun(in_axis=2, out_axis=(1, 3), batch_axis=0), self.dtype, name="qkv_einsum")()
            q, key, value = jnp.moveaxis(contract(x, w, 2), 2, 0)
        else:
            q = contract(x, Einsum((n, d, h), lecun(in_axis=1, out_axis=(0, 2)), self.dtype, name="q_einsum")(), 1)
            w = Einsum((2, k, d, h), lecun(in_axis=2, out_axis=(1, 3), batch_axis=0), self.dtype, name="kv_einsum")()
            key, value = jnp.moveaxis(contract(x, w, 2), 2, 0)
        q = apply_rope(q, sin, cos) * jnp.asarray(c.query_pre_attn_scalar**-0.5, self.dtype)
        key = apply_rope(key, sin, cos)
        if cache is None:
            new = (key, value)
            key, value = key.transpose(0, 2, 3, 1), value.transpose(0, 2, 1, 3)
        else:
            key = jax.lax.dynamic_update_slice(cache[0], key.transpose(0, 2, 3, 1).astype(cache[0].dtype),
                                               (0, 0, 0, end))
            value = jax.lax.dynamic_update_slice(cache[1], value.transpose(0, 2, 1, 3).astype(cache[1].dtype),
                                                 (0, 0, end, 0))
            new = (key, value)
        b, t = q.shape[:2]
        if t > 1 and use_fused(c.attention_impl, c.attn_logits_softcap):
            # key [B, K, H, S] -> [B, S, K, H]; value [B, K, S, H] -> [B, S, K, H].
            out = fused_attention(q, key.transpose(0, 3, 1, 2), value.transpose(0, 2, 1, 3), mask)
            w = Einsum((n, h, d), lecun(in_axis=(0, 1), out_axis=2), self.dtype, name="attn_vec_einsum")()
            return einsum("btnh,nhd->btd", out, w), new
        q, key, value = q.reshape(b, t, k, n // k, h), key.astype(self.dtype), value.astype(self.dtype)
        if t == 1:  # One query: a fused multiply-reduce; XLA's CPU batched dot is slow for such small slices.
            logits = jnp.sum(q[:, 0, :, :, :, None].astype(jnp.float32) * key[:, :, None], axis=3)[:, :, :, None]
        else:
            logits = precision.einsum_f32("btkgh,bkhs->bkgts", q, key)
        logits = soft_cap(logits, c.attn_logits_softcap)
        logits = jnp.where(mask[:, None, None], logits, MASKED_LOGIT)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        if t == 1:
            out = jnp.sum(probs[:, :, :, 0, :, None].astype(jnp.float32) * value[:, :, None], axis=3)
            out = out.astype(self.dtype).reshape(b, t, n, h)
        else:
            out = einsum("bkgts,bksh->btkgh", probs, value).reshape(b, t, n, h)
        w = Einsum((n, h, d), lecun(in_axis=(0, 1), out_axis=2), self.dtype, name="attn_vec_einsum")()
        out = einsum("btnh,nhd->btd", out, w)
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
        gate_up = contract(x, gating.astype(self.dtype), 1)
        hidden = nn.gelu(gate_up[..., 0, :], approximate=True) * gate_up[..., 1, :]
        return einsum("btf,fd->btd", hidden, linear.astype(self.dtype))


class Block(nn.Module):
    """One decoder layer: (x, this layer's cache or None), is_sliding -> (x, keys/values or cache).
    Under nn.scan the second output is stacked over layers."""

    config: LLMConfig
    dtype: Any
    dropout: float
    deterministic: bool
    return_kv: bool = True

    @nn.compact
    def __call__(self, x, is_sliding, shared):
        x, cache = x
        c = self.config
        mask = shared["mask"]
        if shared["sliding_mask"] is not None:
            mask = jnp.where(is_sliding, shared["sliding_mask"], mask)

        y = RMSNorm(c.norm_eps, name="pre_attention_norm")(x)
        y, kv = Attention(c, self.dtype, name="attn")(y, shared["sin"], shared["cos"], mask, cache, shared["end"])
        if c.post_norms:
            y = RMSNorm(c.norm_eps, name="post_attention_norm")(y)
        x = x + nn.Dropout(self.dropout)(y, deterministic=self.deterministic)

        y = RMSNorm(c.norm_eps, name="pre_ffw_norm")(x)
        y = FeedForward(c, self.dtype, name="mlp")(y)
        # The MLP branch drops before its post-norm, the attention branch after: big_vision's order
        # (models/ppp/gemma.py Block.__call__, lines 409-418 at 0127fb6), which the checkpoints were
        # tuned with. Only visible with dropout > 0.
        y = nn.Dropout(self.dropout)(y, deterministic=self.deterministic)
        if c.post_norms:
            y = RMSNorm(c.norm_eps, name="post_ffw_norm")(y)
        x = x + y
        return (x, None), kv if self.return_kv else None


class Gemma2(nn.Module):
    """Embeds text, runs the decoder stack on any embedded sequence, and computes tied logits."""

    config: LLMConfig
    dtype: Any = jnp.float32
    dropout: float = 0.0
    remat: bool | str = False  # a model/remat.py policy name, or False / True for "dots" / "full"

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
        logits = precision.einsum_f32("...d,vd->...v", h, table)
        return soft_cap(logits, self.config.final_logits_softcap)

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array, sliding_mask: jax.Array | None,
                 *, deterministic: bool = True, return_kv: bool = False, layers: list[dict] | None = None,
                 cache: list[KVCache] | None = None, cache_end: jax.Array | None = None):
        """x [B, T, D] embedded inputs, positions int[B, T], mask bool[B, T, S] over the keys,
        sliding_mask the same for sliding layers (None: no window).

        Sequences (training, prefill) run the scanned stack and return (final-normed hidden states,
        with return_kv the keys and values of every layer, each [depth, B, T, K, H], else None).
        Decoding steps pass `layers` (from
        unstack_layers) and `cache` (one KVCache per layer, S slots): the stack runs as a loop over
        the pre-sliced weights, this call's tokens go into each cache at slot `cache_end`, and the
        updated caches come back. Under a scan XLA would copy every layer's weights out of the
        stacked arrays on every step, which for one token costs more than the matmuls.
        """
        c = self.config
        sin, cos = rope_tables(positions, c.head_dim, c.rope_base)
        use_sliding = sliding_mask is not None and sliding_layers(c).any()
        shared = dict(sin=sin, cos=cos, mask=mask, sliding_mask=sliding_mask if use_sliding else None, end=cache_end)
        x = x.astype(self.dtype)
        if layers is None:
            # What each layer keeps for the backward pass: model/remat.py.
            block = nn.remat(Block, prevent_cse=False, policy=remat_policies.policy(self.remat))
            scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                              in_axes=(0, nn.broadcast), length=c.depth)(
                c, self.dtype, self.dropout, deterministic, return_kv, name="layers")
            (x, _), kv = scanned((x, None), jnp.asarray(sliding_layers(c)), shared)
            return self.final_norm(x), kv
        block = Block(c, self.dtype, self.dropout, deterministic, parent=None)
        new_cache = []
        for layer, layer_cache, is_sliding in zip(layers, cache, sliding_layers(c)):
            (x, _), updated = block.apply({"params": layer}, (x, layer_cache), is_sliding, shared)
            new_cache.append(updated)
        return self.final_norm(x), new_cache


def unstack_layers(params: dict, depth: int) -> list[dict]:
    """The scanned `layers` params (stacked on axis 0) as one tree per layer, for Gemma2(layers=...)."""
    return [jax.tree.map(lambda x, i=i: x[i], params) for i in range(depth)]


class Embedder(nn.Module):
    vocab_size: int
    width: int

    def setup(self):
        self.table = self.param("input_embedding", nn.initializers.normal(stddev=0.01),
                                (self.vocab_size, self.width))
