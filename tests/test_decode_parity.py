"""Decoding over the KV cache: greedy equals transformers' generate; beam search equals a plain
re-implementation of big_vision's beam_decode that re-runs the full forward pass (no cache) at every
step, and with a beam as wide as the vocabulary allows it finds the exhaustive optimum."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model import decode  # noqa: E402
from model.checkpoint import load  # noqa: E402
from model.paligemma import PaliGemma  # noqa: E402
from model.testing import hf_inputs, random_hf_model, random_inputs, tiny_config  # noqa: E402

pytestmark = pytest.mark.parity
EOS = 1


def _twins(tmp_path, **changes):
    config = tiny_config(**changes)
    model = random_hf_model(config, seed=5)
    model.save_pretrained(tmp_path)
    loaded, params = load(str(tmp_path))
    return loaded, params, model


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The default tiny twin (GQA, soft-caps, window 6), shared by the tests that need no variant."""
    return _twins(tmp_path_factory.mktemp("default"))


def _prompts(config, lengths, seed):
    """Eval layout: [BOS, prefix..., sep] with mask_ar 0, right-padded."""
    images, tokens, mask_ar, mask_input = random_inputs(config, lengths, [0] * len(lengths), max(lengths), seed)
    return images, tokens, np.zeros_like(mask_ar), mask_input


@pytest.mark.parametrize("changes", [None, dict(num_kv_heads=1, image_size=30, patch_size=6)],
                         ids=["gqa-sliding", "mqa"])
def test_greedy_matches_transformers_generate(request, tmp_path, changes):
    config, params, hf = request.getfixturevalue("default") if changes is None else _twins(tmp_path, **changes)
    images, tokens, mask_ar, mask_input = _prompts(config, [3, 7, 1, 5], seed=0)
    ours = decode.generate(config, params, images, tokens, mask_ar, mask_input, max_decode_len=12)
    long_runs = 0
    for i, n in enumerate(mask_input.sum(axis=1)):
        inputs = hf_inputs(config, images[i:i + 1], tokens[i:i + 1, :n], mask_ar[i:i + 1, :n], mask_input[i:i + 1, :n])
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=0)
        ref = out[0, inputs["input_ids"].shape[1]:].numpy()
        expected = np.zeros(12, np.int32)
        expected[:len(ref)] = ref
        np.testing.assert_array_equal(ours[i], expected, err_msg=f"example {i}")
        long_runs += EOS not in ref
    assert long_runs >= 2  # most runs go the full 12 tokens, so the cache is exercised far past the window


def _reference_beam(config, params, image, prompt, beam, max_len):
    """big_vision's beam_decode written plainly, one example, full forward at every step."""
    width = len(prompt) + max_len
    apply = _forward(config, width)

    def logp(seq):
        tokens = np.zeros((1, width), np.int32)
        tokens[0, :len(seq)] = seq
        mask_ar = np.zeros((1, width), np.int32)
        mask_ar[0, len(prompt):] = 1
        mask_input = (np.arange(width) < len(seq))[None].astype(np.int32)
        logits = np.asarray(apply(params, image[None], tokens, mask_ar, mask_input))[0, len(seq) - 1]
        return np.asarray(jax.nn.log_softmax(logits))

    live, best, best_score = [([], 0.0)], None, -np.inf
    for _ in range(max_len):
        grown = []
        for seq, score in live:
            lp = logp(list(prompt) + seq)
            if score + lp[EOS] > best_score:
                best, best_score = seq + [EOS], score + lp[EOS]
            grown += [(seq + [int(t)], score + lp[t]) for t in np.argsort(-lp, kind="stable")[:beam + 1] if t != EOS]
        live = sorted(grown, key=lambda x: -x[1])[:beam]
        if max(s for _, s in live) < best_score:
            break
    return np.pad(best, (0, max_len - len(best)))


_FORWARDS = {}


def _forward(config, width):
    key = (config, width)
    if key not in _FORWARDS:
        _FORWARDS[key] = jax.jit(lambda p, *a: PaliGemma(config).apply({"params": p}, *a))
    return _FORWARDS[key]


@pytest.mark.parametrize("beam", [2, 3])
def test_beam_matches_a_plain_reimplementation(default, beam):
    config, params, _ = default
    images, tokens, mask_ar, mask_input = _prompts(config, [4, 2], seed=1)
    ours = decode.generate(config, params, images, tokens, mask_ar, mask_input, max_decode_len=6, beam_size=beam,
                           eos_id=EOS)
    for i, n in enumerate(mask_input.sum(axis=1)):
        np.testing.assert_array_equal(ours[i], _reference_beam(config, params, images[i], tokens[i, :n], beam, 6))


def test_wide_beam_finds_the_exhaustive_optimum(tmp_path):
    """Vocabulary 6 and 2 steps: beam 5 keeps every non-EOS first token, so the result must be the
    most probable of all sequences that end in EOS within 2 tokens."""
    config, params, _ = _twins(tmp_path, vocab_size=6)
    images, tokens, mask_ar, mask_input = _prompts(config, [3], seed=2)
    ours = decode.generate(config, params, images, tokens, mask_ar, mask_input, max_decode_len=2, beam_size=5)
    apply = _forward(config, 5)
    scores = {}
    for first in range(6):
        seq = np.array([[*tokens[0], first]], np.int32)
        mask_ar1, valid = np.array([[0, 0, 0, 1]]), np.ones((1, 4), np.int32)
        pad = lambda x: np.pad(x, ((0, 0), (0, 1)))
        logits = np.asarray(apply(params, images, pad(seq), pad(mask_ar1), pad(valid)))[0]
        lp0, lp1 = (np.asarray(jax.nn.log_softmax(logits[j])) for j in (2, 3))
        scores[(EOS, 0)] = lp0[EOS]
        if first != EOS:
            scores[(first, EOS)] = lp0[first] + lp1[EOS]
    best = max(scores, key=scores.get)
    assert sorted(scores.values())[-1] - sorted(scores.values())[-2] > 1e-4  # no near-tie
    np.testing.assert_array_equal(ours[0], best)


def test_compiled_once_per_shape(default):
    config, params, _ = default
    first = _prompts(config, [3, 2], seed=3)
    args = dict(max_decode_len=4, beam_size=2, eos_id=EOS)
    a = decode.generate(config, params, *first, **args)
    b = decode.generate(config, params, *first, **args)
    fn = decode._compiled(config, np.dtype("float32"), 4, 2)
    assert fn._cache_size() == 1
    np.testing.assert_array_equal(a, b)
    decode.generate(config, params, *_prompts(config, [5], seed=4), **args)
    assert fn._cache_size() == 2


def test_bad_shapes_are_named(default):
    config, params, _ = default
    images, tokens, mask_ar, mask_input = _prompts(config, [3], seed=0)
    with pytest.raises(ValueError, match=r"mask_input has shape \(1, 2\), expected \(1, 3\)"):
        decode.generate(config, params, images, tokens, mask_ar, mask_input[:, :2], max_decode_len=3)


def test_stops_at_eos_and_pads_with_zeros(default):
    config, params, _ = default
    prompts = _prompts(config, [3, 4, 2, 6], seed=6)
    free = decode.generate(config, params, *prompts, max_decode_len=10, eos_id=0)  # 0 never wins here
    eos = int(free[0, 3])  # make example 0's 4th token the EOS
    for beam in (1, 2):
        out = decode.generate(config, params, *prompts, max_decode_len=10, beam_size=beam, eos_id=eos)
        for row in out:  # beam search always ends in EOS; greedy at least for example 0
            ends = np.flatnonzero(row == eos)
            assert len(ends) or beam == 1
            if len(ends):
                assert not row[ends[0] + 1:].any()
        if beam == 1:
            stop = list(free[0]).index(eos)
            np.testing.assert_array_equal(out[0], np.pad(free[0, :stop + 1], (0, 9 - stop)))
