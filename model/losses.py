"""Next-token cross-entropy over the vocabulary, dense or chunked over positions.

PaliGemma's vocabulary has 257,152 entries. The dense loss materialises float32 logits [B, T, V] for
every text position at once, then log-softmax and, in the backward pass, their gradient of the same
size: for 3b-224 at batch 32 and 64 text positions each is 2.1 GB, several of them live at the peak.
`chunked_token_losses` computes the same per-token loss a chunk of positions at a time under
`jax.checkpoint` inside `lax.map`: only one chunk's logits exist at any moment, in the forward and in
the backward pass (which recomputes that chunk's logits: one more [chunk, D] x [D, V] product per
chunk, +1/3 of the logits' FLOPs, 1.6% of a 3b-224 step's; see docs/efficiency.md).

The per-token loss is the trainer's (harness/cell/train.py, docs/paligemma2-facts.md §0.9): smoothed cross-entropy
with 1 - ls on the target and ls / (V - 1) on every other class, on soft-capped float32 logits.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Positions per chunk are chosen so that one chunk's float32 logits hold about this many values
# (128M values = 512 MiB: 512 positions of the 257,152-way vocabulary). Fewer, larger chunks: each
# chunk re-reads and casts the embedding table and adds its gradient into a float32 accumulator
# (2.4 GB for 3B), so small chunks trade memory for that traffic (docs/efficiency.md).
CHUNK_VALUES = 1 << 27


def token_losses(logits: jax.Array, targets: jax.Array, label_smoothing: float) -> jax.Array:
    """Smoothed cross-entropy of each position: logits [..., V], targets int[...] -> float32 [...]."""
    with jax.named_scope("token_losses"):
        return _token_losses(logits, targets, label_smoothing)


def _token_losses(logits: jax.Array, targets: jax.Array, label_smoothing: float) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    if not label_smoothing:
        return nll
    vocab = logits.shape[-1]
    others = -jnp.sum(logp, axis=-1) - nll  # sum of -log p over the non-target classes
    return (1.0 - label_smoothing) * nll + label_smoothing * others / (vocab - 1)


def default_chunk(vocab_size: int) -> int:
    """Positions per chunk: CHUNK_VALUES / V rounded down to a multiple of 8, at least 8."""
    return max(8, (CHUNK_VALUES // vocab_size) // 8 * 8)


def chunked_token_losses(hidden: jax.Array, targets: jax.Array, logits_fn: Callable[[jax.Array], jax.Array],
                         label_smoothing: float, chunk: int) -> jax.Array:
    """token_losses(logits_fn(hidden), targets) computed `chunk` positions at a time.

    hidden [B, T, D] (final-normed hidden states), targets int[B, T]; logits_fn maps [n, D] to float32
    logits [n, V] (the tied embedding and soft-cap) and may close over the parameters: gradients reach
    them through the checkpointed chunks. Returns float32 [B, T].
    """
    b, t, d = hidden.shape
    n = b * t
    num_chunks = -(-n // chunk)
    chunk = -(-n // num_chunks)  # as even as possible: at most num_chunks - 1 padded positions
    pad = num_chunks * chunk - n
    h = jnp.pad(hidden.reshape(n, d), ((0, pad), (0, 0))).reshape(num_chunks, chunk, d)
    y = jnp.pad(targets.reshape(n), (0, pad)).reshape(num_chunks, chunk)

    @jax.checkpoint
    def one_chunk(args):
        h_chunk, y_chunk = args
        return token_losses(logits_fn(h_chunk), y_chunk, label_smoothing)

    return jax.lax.map(one_chunk, (h, y)).reshape(-1)[:n].reshape(b, t)


def masked_mean(token_loss: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of token_loss [B, T] over each example's mask -> [B] (0 for an example with no loss tokens)."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(token_loss * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
