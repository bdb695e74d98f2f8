"""The input pipeline is deterministic given the seed and addressable by step (what makes resume exact)."""

import random

import numpy as np
import pytest

from harness.cell.data import (
    Source,
    TextSpec,
    eval_batches,
    mixture_batches,
    pad_to_square,
    preprocess_image,
    train_batches,
)
from model.tokenizer import Tokenizer
from model.train_tokenizer import train_tokenizer
from tasks.base import Example

WORDS = "what color is the shape red blue green circle square answer en caption a an of".split()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(200)]
    return Tokenizer(train_tokenizer(lines, 300, tmp_path_factory.mktemp("sp") / "t.model"))


def _examples(n, tag="x", prefix="answer en what color"):
    rng = np.random.default_rng(0)
    return [Example(id=f"{tag}{i}", image=rng.integers(0, 256, (10 + i, 20, 3), dtype=np.uint8),
                    prefix=f"{prefix} {i}", targets=("red", "blue", "green"), reference=None)
            for i in range(n)]


def test_images_are_resized_to_minus1_plus1():
    img = np.zeros((7, 13, 3), np.uint8)
    img[..., 0] = 255
    out = preprocess_image(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], 1.0)
    np.testing.assert_allclose(out[..., 1], -1.0)


def test_pad_to_square_is_white_right_and_bottom():
    img = np.zeros((2, 4, 3), np.uint8)
    out = pad_to_square(img)
    assert out.shape == (4, 4, 3)
    assert (out[:2] == 0).all() and (out[2:] == 255).all()


def test_train_batches_are_deterministic_and_indexable(tok):
    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    a = train_batches(_examples(5), tok, spec, batch_size=2, num_steps=7, seed=3)
    b = train_batches(_examples(5), tok, spec, batch_size=2, num_steps=7, seed=3)
    assert len(a) == 7
    # Item `step` is the same whether or not the earlier steps were read: what resume relies on.
    for step in (6, 0, 3):
        for key in a[step]:
            np.testing.assert_array_equal(a[step][key], b[step][key])
    c = train_batches(_examples(5), tok, spec, batch_size=2, num_steps=7, seed=4)
    assert any(not np.array_equal(a[s]["text"], c[s]["text"]) for s in range(7))
    batch = a[0]
    assert batch["image"].shape == (2, 8, 8, 3)
    assert batch["text"].shape == (2, 17)
    assert set(np.unique(batch["mask_loss"])) <= {0, 1}


def test_every_example_is_seen_once_per_epoch(tok):
    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    exs = _examples(6)
    ds = train_batches(exs, tok, spec, batch_size=3, num_steps=2, seed=0)
    prefixes = sorted(tok.decode(row[1:]).split("\n")[0] for s in range(2) for row in ds[s]["text"])
    assert prefixes == sorted(e.prefix for e in exs)


def test_mixture_follows_the_weights(tok):
    a, b = _examples(3, "a"), _examples(3, "b", prefix="caption en")
    ds = mixture_batches([Source(a, 3.0), Source(b, 1.0)], tok, text_len=16, resolution=8,
                         batch_size=50, num_steps=4, seed=0)
    texts = [tok.decode(row) for s in range(4) for row in ds[s]["text"]]
    share = sum(t.startswith("caption") for t in texts) / len(texts)
    assert 0.15 < share < 0.35


def test_eval_batches_pad_the_last_batch_and_keep_ids(tok):
    spec = TextSpec(text_len=12, square_pad=True, resolution=8)
    batches = list(eval_batches(_examples(5), tok, spec, batch_size=2))
    assert [b.ids for b in batches] == [["x0", "x1"], ["x2", "x3"], ["x4"]]
    assert batches[-1].arrays["text"].shape == (2, 12)
