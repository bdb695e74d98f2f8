"""The beam-search bookkeeping on a synthetic language model, against a plain re-implementation.

Random PaliGemma models almost always prefer ending at once (scores are summed log-probs, without
length normalisation, as in big_vision), so the real-model test in test_decode_parity.py rarely goes
deep. Here a hashed lookup table plays the model: its next-token distribution depends on the whole
history stored in the cache (so a missed cache reorder changes the result) and EOS is unlikely early.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import decode

EOS, VOCAB, MAX_LEN, BATCH = 1, 7, 6, 3
rng = np.random.default_rng(0)
TABLE = jnp.asarray(rng.normal(0.0, 2.0, (101, VOCAB)), jnp.float32)
WEIGHTS = jnp.asarray(rng.integers(1, 1000, MAX_LEN + 1), jnp.int32)
EOS_BIAS = jnp.linspace(-6.0, 3.0, MAX_LEN + 1)


def toy_logits(history, length):
    """history int[N, S] (token + 1 per filled slot, 0 after), length: filled slots."""
    row = TABLE[jnp.sum(history * WEIGHTS[None, :history.shape[1]], axis=1) % TABLE.shape[0]]
    return row.at[:, EOS].add(EOS_BIAS[length - 1])


def toy_extend(token, cache):
    history = jax.lax.dynamic_update_slice(cache["pos"], (token + 1)[:, None], (0, cache["end"]))
    cache = dict(cache, pos=history, end=cache["end"] + 1)
    return toy_logits(history, cache["end"]), cache


def toy_start():
    """Slot 0 holds the example's id (its "prompt"), so examples differ."""
    history = jnp.zeros((BATCH, MAX_LEN + 1), jnp.int32).at[:, 0].set(jnp.arange(BATCH) + 1)
    dummy = jnp.zeros((BATCH, 1, 1, 1))
    cache = dict(kv=[(dummy, dummy)], pos=history, valid=history > 0, next_pos=jnp.ones(BATCH, jnp.int32),
                 end=jnp.int32(1))
    return toy_logits(history, 1), cache


def reference_beam(example, beam):
    """big_vision's beam_decode written plainly over Python lists, for one example."""
    def logp(seq):
        history = np.zeros((1, MAX_LEN + 1), np.int32)
        history[0, :len(seq) + 1] = [example + 1] + [t + 1 for t in seq]
        return np.asarray(jax.nn.log_softmax(toy_logits(jnp.asarray(history), len(seq) + 1)))[0]

    live, best, best_score = [([], 0.0)], None, -np.inf
    for _ in range(MAX_LEN):
        grown = []
        for seq, score in live:
            lp = logp(seq)
            if score + lp[EOS] > best_score:
                best, best_score = seq + [EOS], score + lp[EOS]
            grown += [(seq + [int(t)], score + lp[t]) for t in np.argsort(-lp, kind="stable")[:beam + 1] if t != EOS]
        live = sorted(grown, key=lambda x: -x[1])[:beam]
        if max(s for _, s in live) < best_score:
            break
    return np.pad(best, (0, MAX_LEN - len(best)))


@pytest.mark.parametrize("beam", [2, 3])
def test_beam_bookkeeping_matches_the_reference(beam):
    out = jax.jit(lambda: decode._beam(*toy_start(), toy_extend, MAX_LEN, EOS, beam))()
    greedy = jax.jit(lambda: decode._greedy(*toy_start(), toy_extend, MAX_LEN, EOS))()
    for i in range(BATCH):
        np.testing.assert_array_equal(out[i], reference_beam(i, beam), err_msg=f"example {i}")
    lengths = (np.asarray(out) != 0).sum(axis=1)
    assert lengths.max() >= 3  # the search went several steps deep
    assert (np.asarray(out) != np.asarray(greedy)).any()  # and found something greedy did not
