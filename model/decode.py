"""Greedy and beam-search decoding over PaliGemma's KV cache.

Each (config, dtype, max_decode_len, beam_size) gets one jax.jit function that prefills the
cache once and then loops (lax.while_loop) one token at a time until every example is finished or
max_decode_len is reached; jit keeps one compiled version per input shape.

Prompts of different lengths share one cache without re-aligning: every example writes its prompt at
slots [0, P) (padding slots are masked) and generated token t at slot P + t, with its own position
(number of real prompt tokens + t), so the attention sees the same sequence as an unpadded run.

Sharded decoding: on a (data, model) mesh the params sit where model/sharding.py's rules put them, the
prompts and the cache rows go over 'data' and the KV heads over 'model' (each only where it divides;
else that axis is replicated), and the tokens come back replicated. Greedy and beam pick the same
tokens on any mesh: only the reduction order of the matmuls changes.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from model import sharding
from model.config import PaliGemmaConfig
from model.gemma2 import unstack_layers
from model.paligemma import Cache, PaliGemma, Params
from model.siglip import normalize_images


def _reorder(cache: Cache, index: jax.Array) -> Cache:
    """Picks batch rows `index` of every per-example cache entry (beam search's parent beams)."""
    take = lambda x: jnp.take(x, index, axis=0)
    return dict(cache, kv=jax.tree.map(take, cache["kv"]),
                **{key: take(cache[key]) for key in ("pos", "valid", "next_pos")})


def _greedy(logits, cache, extend, max_len: int, eos_id: jax.Array) -> jax.Array:
    """Argmax decoding; after an example's EOS its outputs are 0."""
    b = logits.shape[0]
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out = jnp.zeros((b, max_len), jnp.int32).at[:, 0].set(token)

    def cond(state):
        i, _, _, _, done = state
        return (i < max_len) & ~jnp.all(done)

    def body(state):
        i, token, cache, out, done = state
        logits, cache = extend(token, cache)
        token = jnp.where(done, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
        return i + 1, token, cache, out, done | (token == eos_id)

    return jax.lax.while_loop(cond, body, (1, token, cache, out, token == eos_id))[3]


def _beam(logits, cache, extend, max_len: int, eos_id: jax.Array, beam: int) -> jax.Array:
    """big_vision's beam_decode (docs/paligemma2-facts.md §1.8; predict_fns `_beam_sample_output`).

    A sequence's score is its summed log-probability, without length normalisation. At every step
    each live beam may end now (its EOS log-prob added) and the best ended sequence so far is kept;
    live beams are the top `beam` non-EOS extensions (of the top beam+1 tokens of each beam). Decoding
    stops when no live beam can beat the best ended one (scores only fall), or at max_decode_len; the
    output is the best ended sequence, so it always ends in EOS within max_decode_len tokens.
    """
    b, vocab = logits.shape
    neg = jnp.float32(-jnp.inf)
    rows = (jnp.arange(b)[:, None] * beam)
    cache = _reorder(cache, jnp.repeat(jnp.arange(b), beam))
    logits = jnp.repeat(logits, beam, axis=0)
    # Only beam 0 is live at the start, so the first expansion draws from one distribution.
    state = dict(tokens=jnp.zeros((b, beam, max_len), jnp.int32),
                 scores=jnp.full((b, beam), neg).at[:, 0].set(0.0),
                 best_tokens=jnp.zeros((b, max_len), jnp.int32), best_score=jnp.full((b,), neg))

    def select(i, logits, cache, s):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(b, beam, vocab))
        # Ending now: candidates = [best so far, each live beam + EOS]; ties keep the earlier best.
        ended = jax.lax.dynamic_update_slice(s["tokens"], jnp.full((b, beam, 1), eos_id, jnp.int32), (0, 0, i))
        eos_logp = jnp.take(logp, eos_id, axis=-1)
        cand_scores = jnp.concatenate([s["best_score"][:, None], s["scores"] + eos_logp], axis=1)
        cand_tokens = jnp.concatenate([s["best_tokens"][:, None], ended], axis=1)
        pick = jnp.argmax(cand_scores, axis=1)
        best_score = jnp.take_along_axis(cand_scores, pick[:, None], axis=1)[:, 0]
        best_tokens = jnp.take_along_axis(cand_tokens, pick[:, None, None], axis=1)[:, 0]
        # Continuing: the top `beam` of each beam's top beam+1 non-EOS tokens.
        top_logp, top_tokens = jax.lax.top_k(logp, beam + 1)
        cand = jnp.where(top_tokens == eos_id, neg, s["scores"][..., None] + top_logp).reshape(b, -1)
        scores, index = jax.lax.top_k(cand, beam)
        parent = index // (beam + 1)
        new_token = jnp.take_along_axis(top_tokens.reshape(b, -1), index, axis=1)
        tokens = jnp.take_along_axis(s["tokens"], parent[..., None], axis=1)
        tokens = jax.lax.dynamic_update_slice(tokens, new_token[..., None], (0, 0, i))
        cache = _reorder(cache, (rows + parent).reshape(-1))
        done = jnp.all(jnp.max(scores, axis=1) < best_score)
        s = dict(tokens=tokens, scores=scores, best_tokens=best_tokens, best_score=best_score)
        return new_token.reshape(-1), cache, s, done

    def cond(carry):
        i, _, _, _, done = carry
        return (i < max_len) & ~done

    def body(carry):
        i, token, cache, s, _ = carry
        logits, cache = extend(token, cache)
        token, cache, s, done = select(i, logits, cache, s)
        return i + 1, token, cache, s, done

    token, cache, state, done = select(0, logits, cache, state)
    return jax.lax.while_loop(cond, body, (1, token, cache, state, done))[3]["best_tokens"]


def _constrain_cache(cache: Cache, mesh: Mesh) -> Cache:
    """Pins the cache to the mesh: KV [B, K, ...] rows over 'data' and heads over 'model', per-example
    state rows over 'data', the shared write slot replicated."""
    pin = jax.lax.with_sharding_constraint
    kv = [tuple(pin(x, sharding.kv_cache_sharding(x.shape, mesh)) for x in layer) for layer in cache["kv"]]
    rows = {key: pin(cache[key], sharding.rows_sharding(cache[key].shape, mesh))
            for key in ("pos", "valid", "next_pos")}
    return dict(cache, kv=kv, end=pin(cache["end"], sharding.replicated(mesh)), **rows)


@functools.cache
def _compiled(config: PaliGemmaConfig, dtype: np.dtype, max_len: int, beam_size: int, mesh: Mesh | None = None):
    mesh = sharding.local_mesh() if mesh is None else mesh
    model = PaliGemma(config, dtype=dtype)

    def run(params, images, tokens, mask_ar, mask_input, eos_id):
        # Cast and slice the weights once per call, not once per token.
        params = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
        variables = {"params": params}
        cache_size = config.num_image_tokens + tokens.shape[1] + max_len
        logits, cache = model.apply(variables, normalize_images(images), tokens, mask_ar, mask_input,
                                    cache_size=cache_size,
                                    method=PaliGemma.prefill)
        layers = unstack_layers(params["llm"]["layers"], config.llm.depth)
        step = functools.partial(model.apply, variables, layers=layers, method=PaliGemma.extend)

        def extend(token, cache):
            logits, cache = step(token, cache)
            return logits, _constrain_cache(cache, mesh)

        cache = _constrain_cache(cache, mesh)
        if beam_size == 1:
            return _greedy(logits, cache, extend, max_len, eos_id)
        return _beam(logits, cache, extend, max_len, eos_id, beam_size)

    return jax.jit(run, out_shardings=sharding.replicated(mesh))


def generate(config: PaliGemmaConfig, params: Params, images: Any, tokens: Any, mask_ar: Any,
             mask_input: Any, *, max_decode_len: int, beam_size: int = 1, eos_id: int = 1,
             dtype: Any = jnp.float32, mesh: Mesh | None = None) -> np.ndarray:
    """Decodes after each prompt; returns int32 [B, max_decode_len]: the generated ids, EOS included,
    0 after it.

    The prompt is big_vision's eval layout [BOS, prefix, "\\n"] (mask_ar all 0), right-padded with
    mask_input 0; images [B, H, W, 3]: uint8 pixels (normalised on the device, a quarter of the bytes to
    move) or floats in [-1, 1]. beam_size 1 is greedy (where an eos_id outside the
    vocabulary never stops it early). Pass params already on the device (jax arrays) when calling
    repeatedly, or they are copied over on every call. `mesh` (default: this process's first device)
    is where decoding runs; params already placed on it by the partition rules (as harness/cell/train.py
    returns them) stay where they are. On a multi-host mesh every process passes the same prompts.
    """
    tokens = np.asarray(tokens, np.int32)
    b, t = tokens.shape
    res = config.vision.image_size
    checks = {"images": (np.shape(images), (b, res, res, 3)), "mask_ar": (np.shape(mask_ar), (b, t)),
              "mask_input": (np.shape(mask_input), (b, t))}
    for name, (got, want) in checks.items():
        if tuple(got) != want:
            raise ValueError(f"generate: {name} has shape {tuple(got)}, expected {want}")
    if max_decode_len < 1 or not 1 <= beam_size < config.llm.vocab_size:
        raise ValueError(f"generate: need max_decode_len >= 1 and 1 <= beam_size < vocab "
                         f"(got {max_decode_len}, {beam_size})")
    if beam_size > 1 and not 0 <= eos_id < config.llm.vocab_size:
        raise ValueError(f"generate: beam search needs an eos_id in the vocabulary, got {eos_id}")
    key = (config, jnp.dtype(dtype), max_decode_len, beam_size)
    fn = _compiled(*key) if mesh is None else _compiled(*key, mesh)  # one cache entry per (key, mesh)
    where = sharding.local_mesh() if mesh is None else mesh
    params = sharding.place(params, sharding.param_shardings(params, where))
    images = np.asarray(images)
    images = images if images.dtype == np.uint8 else images.astype(np.float32)
    inputs = [images, tokens, np.asarray(mask_ar, np.int32), np.asarray(mask_input, bool)]
    inputs = [sharding.place(x, sharding.rows_sharding(x.shape, where)) for x in inputs]
    out = fn(params, *inputs, sharding.place(np.int32(eos_id), sharding.replicated(where)))
    return np.asarray(out, np.int32)
