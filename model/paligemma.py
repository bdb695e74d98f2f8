"""PaliGemma: SigLIP image tokens + projector, concatenated with text embeddings, into Gemma 2.

Sequence layout (docs/paligemma2-facts.md §1.1, §1.7): [image tokens, BOS, prefix, "\\n", suffix, EOS, pad].
Attention is prefix-LM: token i sees token j iff cumsum(mask_ar)[j] <= cumsum(mask_ar)[i] and both are
real (§0.2), with mask_ar 0 for the image tokens. Positions are cumsum(input_mask) - 1 as in big_vision
(transformers starts them at 1; RoPE only sees differences, so the two agree).

The parameter tree is {'img': ..., 'llm': ...} named like the big_vision checkpoints (§1.5).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.config import PaliGemmaConfig
from model.gemma2 import Gemma2
from model.siglip import SigLIP

Params = dict[str, Any]
# The decoding state: `kv` one gemma2.KVCache per layer (S slots); per slot its position (`pos`) and
# whether it holds a real token (`valid`); `end` the next slot to write (shared by the batch);
# `next_pos` [B] each example's next position.
Cache = dict[str, Any]


def prefix_lm_mask(mask_ar: jax.Array, valid: jax.Array) -> jax.Array:
    """bool[B, S, S]: i sees j iff cumsum(mask_ar)[j] <= cumsum(mask_ar)[i] and i, j are real tokens."""
    blocks = jnp.cumsum(mask_ar, axis=1)
    return (blocks[:, None, :] <= blocks[:, :, None]) & valid[:, None, :] & valid[:, :, None]


def sliding_window_mask(mask: jax.Array, q_pos: jax.Array, k_pos: jax.Array, same_block: jax.Array,
                        window: int) -> jax.Array:
    """`mask` narrowed for sliding layers to keys fewer than `window` positions back.

    transformers (masking_utils) keeps key j for query i iff i - j < window, OR-ed with its
    bidirectional block overlay, so the prefix still sees all of itself; `same_block` carries that.
    Distances are in positions (not cache slots), so padding between prompt and generated tokens
    does not count against the window.
    """
    near = (q_pos[:, :, None] - k_pos[:, None, :]) < window
    return mask & (near | same_block)


class PaliGemma(nn.Module):
    """The whole model. `dropout` applies to the LLM residual branches (big_vision's llm.dropout)
    when called with train=True and a 'dropout' rng. For gradients each layer keeps only its matmul
    outputs and recomputes the rest; remat=True keeps nothing and recomputes the whole layer
    (big_vision's nothing_saveable: least memory)."""

    config: PaliGemmaConfig
    dtype: Any = jnp.float32
    dropout: float = 0.0
    remat: bool = False
    # Per-module policies by name (model/remat.py: none, dots, dots_no_batch, full); None: from `remat`.
    remat_img: str | None = None
    remat_llm: str | None = None

    def setup(self):
        img_policy = self.remat if self.remat_img is None else self.remat_img
        llm_policy = self.remat if self.remat_llm is None else self.remat_llm
        self.img = SigLIP(self.config.vision, self.config.llm.width, self.dtype, img_policy)
        self.llm = Gemma2(self.config.llm, self.dtype, self.dropout, llm_policy)

    def _embed(self, images, tokens, mask_ar, mask_input):
        zimg = self.img(images)
        x = jnp.concatenate([zimg, self.llm.embed(tokens)], axis=1)
        pad = ((0, 0), (zimg.shape[1], 0))
        mask_ar = jnp.pad(jnp.asarray(mask_ar, jnp.int32), pad, constant_values=0)
        valid = jnp.pad(jnp.asarray(mask_input, bool), pad, constant_values=True)
        return x, mask_ar, valid

    def _masks(self, mask_ar, valid, positions):
        mask = prefix_lm_mask(mask_ar, valid)
        window = self.config.llm.sliding_window
        if window is None:
            return mask, None
        blocks = jnp.cumsum(mask_ar, axis=1)
        same_block = blocks[:, :, None] == blocks[:, None, :]
        return mask, sliding_window_mask(mask, positions, positions, same_block, window)

    def __call__(self, images: jax.Array, tokens: jax.Array, mask_ar: jax.Array, mask_input: jax.Array,
                 *, train: bool = False) -> jax.Array:
        """images float[B, H, W, 3] in [-1, 1]; tokens int32[B, T]; mask_ar, mask_input [B, T]
        (big_vision's mask_ar and input_mask). Returns float32 logits [B, T, V] for the text positions."""
        return self.text_logits(self.text_hidden(images, tokens, mask_ar, mask_input, train=train))

    def text_hidden(self, images: jax.Array, tokens: jax.Array, mask_ar: jax.Array, mask_input: jax.Array,
                    *, train: bool = False) -> jax.Array:
        """As __call__, but the final-normed hidden states [B, T, D] of the text positions, before the
        logits: a loss can then compute the 257,152-way logits a chunk at a time (model/losses.py)."""
        x, mask_ar, valid = self._embed(images, tokens, mask_ar, mask_input)
        positions = jnp.cumsum(valid, axis=1) - 1
        mask, sliding = self._masks(mask_ar, valid, positions)
        h, _ = self.llm(x, positions, mask, sliding, deterministic=not train)
        return h[:, -tokens.shape[1]:]

    def text_logits(self, hidden: jax.Array) -> jax.Array:
        """Hidden states [..., D] -> soft-capped float32 logits [..., V] (the tied embedding)."""
        return self.llm.logits(hidden)

    def prefill(self, images: jax.Array, tokens: jax.Array, mask_ar: jax.Array, mask_input: jax.Array,
                *, cache_size: int) -> tuple[jax.Array, Cache]:
        """Runs the prompt once, fills a cache of `cache_size` slots, and returns the logits [B, V] of
        each example's last real token (the distribution of its first generated token)."""
        x, mask_ar, valid = self._embed(images, tokens, mask_ar, mask_input)
        b, p = valid.shape
        if cache_size < p:
            raise ValueError(f"cache_size {cache_size} is shorter than the prompt ({p} tokens)")
        positions = jnp.cumsum(valid, axis=1) - 1
        mask, sliding = self._masks(mask_ar, valid, positions)
        h, (k, v) = self.llm(x, positions, mask, sliding, return_kv=True)
        last = p - 1 - jnp.argmax(valid[:, ::-1], axis=1)
        logits = self.llm.logits(jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0])
        free = cache_size - p
        kv = [(jnp.pad(k[i].transpose(0, 2, 3, 1), ((0, 0),) * 3 + ((0, free),)),
               jnp.pad(v[i].transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, free), (0, 0))))
              for i in range(self.config.llm.depth)]
        slots = ((0, 0), (0, free))
        cache = dict(kv=kv, pos=jnp.pad(positions, slots), valid=jnp.pad(valid, slots),
                     end=jnp.int32(p), next_pos=valid.sum(axis=1).astype(jnp.int32))
        return logits, cache

    def extend(self, tokens: jax.Array, cache: Cache, layers: list[dict]) -> tuple[jax.Array, Cache]:
        """Feeds one token per example (int32[B]) after everything in `cache`; returns logits [B, V]
        for the next token and the cache with this token appended at slot `end` (the caller keeps
        end below the cache size). `layers`: the LLM's layer weights, sliced once by
        gemma2.unstack_layers(params['llm']['layers'], depth) and reused for every step."""
        end, pos = cache["end"], cache["next_pos"]
        slot = (jnp.arange(cache["valid"].shape[1]) == end)[None, :]
        valid = cache["valid"] | slot
        k_pos = jnp.where(slot, pos[:, None], cache["pos"])
        mask = valid[:, None, :]
        window = self.config.llm.sliding_window
        sliding = None
        if window is not None:
            sliding = sliding_window_mask(mask, pos[:, None], k_pos, jnp.zeros_like(mask), window)
        x = self.llm.embed(tokens[:, None])
        h, kv = self.llm(x, pos[:, None], mask, sliding, layers=layers, cache=cache["kv"], cache_end=end)
        cache = dict(kv=kv, pos=k_pos, valid=valid, end=end + 1, next_pos=pos + 1)
        return self.llm.logits(h[:, 0]), cache


def _dummy_inputs(config: PaliGemmaConfig):
    res = config.vision.image_size
    tokens = jnp.zeros((1, 1), jnp.int32)
    return jnp.zeros((1, res, res, 3), jnp.float32), tokens, tokens, jnp.ones((1, 1), bool)


def init_params(config: PaliGemmaConfig, rng: jax.Array) -> Params:
    """Fresh float32 parameters {'img': ..., 'llm': ...} for `config` (big_vision's initialisers)."""
    model = PaliGemma(config)
    return jax.jit(model.init)(rng, *_dummy_inputs(config))["params"]


def param_shapes(config: PaliGemmaConfig) -> Params:
    """The parameter tree as jax.ShapeDtypeStruct leaves, without allocating anything."""
    return jax.eval_shape(lambda rng: init_params(config, rng), jax.random.key(0))


def param_count(config: PaliGemmaConfig) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(param_shapes(config)))
