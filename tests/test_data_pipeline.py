"""The input pipeline is deterministic given the seed and addressable by step (what makes resume exact), the
same for any number of grain workers, O(1) per example at any split size, and resizes as big_vision does."""

import random
import time
from collections.abc import Sequence

import numpy as np
import pytest

from harness.cell.data import (
    Source,
    TextSpec,
    eval_batches,
    host_batches,
    host_image,
    mixture_batches,
    normalize_images,
    pad_to_square,
    preprocess_image,
    resize_bilinear,
    shuffled,
    target_at,
    train_batches,
    training_examples,
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


# --- the pipeline at scale: workers, resume, O(1) shuffle, targets, resize, multi-host rows --------------

def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batches_are_the_same_for_0_and_2_workers_and_from_a_resumed_step(tok):
    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    ds = train_batches(_examples(5), tok, spec, batch_size=2, num_steps=9, seed=3)
    expected = [ds[s] for s in range(9)]  # random access, step by step
    threads = list(host_batches(ds, workers=0))
    workers = host_batches(ds, workers=2)
    in_workers = list(workers)
    workers.close()
    from_five = list(host_batches(ds, start=5))  # mid-epoch: 5 x 2 rows of a 5-example split
    assert len(threads) == len(in_workers) == 9 and len(from_five) == 4
    for got in (threads, in_workers, [None] * 5 + from_five):
        for step in range(9):
            if got[step] is not None:
                _same(got[step], expected[step])


class _Counting(Sequence):
    """n examples that count which are loaded."""

    def __init__(self, n):
        self.n, self.loaded = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.loaded.append(i)
        return Example(id=str(i), image=np.zeros((4, 4, 3), np.uint8), prefix="answer en what", targets=("red",),
                       reference=None)


def test_a_batch_of_a_650k_example_split_loads_only_its_own_examples(tok):
    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    examples = _Counting(650_000)
    ds = train_batches(examples, tok, spec, batch_size=4, num_steps=400_000, seed=0)
    start = time.perf_counter()
    ds[300_000]  # epoch 1 (the 1.2M-th draw)
    seconds = time.perf_counter() - start
    assert len(examples.loaded) == 4 and len(set(examples.loaded)) == 4
    # No permutation of 650k indices (tens of ms) is built: the Feistel shuffle computes each index alone.
    assert seconds < 0.05, seconds


@pytest.mark.parametrize("n", [1, 7, 1000, 5000])  # numpy's permutation below FEISTEL_MIN, grain's above
def test_shuffle_is_a_permutation_per_epoch_and_differs_between_epochs(n):
    first = [shuffled(i, n, seed=5) for i in range(n)]
    second = [shuffled(n + i, n, seed=5) for i in range(n)]
    assert {e for e, _ in first} == {0} and {e for e, _ in second} == {1}
    assert sorted(j for _, j in first) == list(range(n)) == sorted(j for _, j in second)
    assert n < 7 or [j for _, j in first] != [j for _, j in second]


def test_targets_cycle_without_replacement(tok):
    targets = tuple(f"answer{k}" for k in range(5))
    ex = Example(id="0", image=np.zeros((4, 4, 3), np.uint8), prefix="q", targets=targets, reference=None)
    for index in range(20):
        visits = [target_at(ex, v, seed=7, index=index) for v in range(15)]
        assert sorted(visits[:5]) == sorted(targets)  # every target before any repeats
        assert visits[5:10] == visits[:5] == visits[10:15]
    assert len({tuple(target_at(ex, v, seed=7, index=i) for v in range(5)) for i in range(20)}) > 1
    # Through the pipeline: 3 examples x 5 epochs, each example gets all of its 5 targets once.
    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    exs = [Example(id=str(i), image=np.zeros((4, 4, 3), np.uint8), prefix=f"q {i}", targets=targets,
                   reference=None) for i in range(3)]
    ds = train_batches(exs, tok, spec, batch_size=3, num_steps=5, seed=1)
    seen: dict[str, list[str]] = {}
    for step in range(5):
        for row in ds[step]["text"]:
            prefix, target = tok.decode(row[1:]).split("\n")
            seen.setdefault(prefix, []).append(target.strip())
    assert all(sorted(t) == sorted(targets) for t in seen.values()) and len(seen) == 3


@pytest.mark.parametrize("shape,size", [((37, 53, 3), 16), ((10, 7, 3), 32), ((100, 100, 3), 33), ((5, 200, 3), 64)])
def test_resize_without_antialias_is_jax_bilinear_without_antialias(shape, size):
    import jax
    import jax.numpy as jnp

    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    reference = np.asarray(jax.image.resize(jnp.asarray(image, jnp.float32), (size, size, 3), "bilinear",
                                            antialias=False))
    np.testing.assert_allclose(resize_bilinear(image, size, size), reference, atol=2e-3)
    host = host_image(image, size, antialias=False)
    assert host.dtype == np.uint8 and np.abs(host.astype(np.float32) - reference).max() <= 0.5 + 2e-3


def test_antialias_changes_a_downscale_and_keeps_uint8():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, ::2] = 255  # one-pixel stripes: averaged away with antialiasing, aliased without
    smooth, aliased = host_image(image, 20, antialias=True), host_image(image, 20, antialias=False)
    assert smooth.dtype == aliased.dtype == np.uint8
    assert smooth.std() < 20 < 50 < aliased.std()


def test_normalised_on_the_device_as_on_the_host():
    import jax.numpy as jnp

    image = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    host = np.asarray(image, np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(np.asarray(normalize_images(jnp.asarray(image))), host, rtol=0, atol=2.5e-7)
    assert normalize_images(host) is host  # float images pass through


def test_a_host_loads_only_its_rows_in_any_order(tok):
    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    full = train_batches(_examples(7), tok, spec, batch_size=4, num_steps=3, seed=2)
    part = train_batches(_examples(7), tok, spec, batch_size=4, num_steps=3, seed=2, rows=np.array([0, 3]))
    for step in range(3):
        _same(part[step], {k: v[[0, 3]] for k, v in full[step].items()})


def test_train_image_is_drawn_per_seed_step_and_row(tok):
    calls = []

    def redraw(ex, seed):
        calls.append(seed)
        return np.full((6, 6, 3), 10 * seed[2], np.uint8)

    spec = TextSpec(text_len=16, square_pad=False, resolution=8)
    ds = train_batches(_examples(5), tok, spec, batch_size=3, num_steps=4, seed=9, train_image=redraw)
    batch = ds[2]
    assert calls == [(9, 2, 0), (9, 2, 1), (9, 2, 2)]
    assert [int(img.mean()) for img in batch["image"]] == [0, 10, 20]


def test_a_plugin_with_train_mixture_trains_on_its_sources(monkeypatch):
    from tasks import registry
    from tasks.mixture import MixtureSource

    parts = {"own": _examples(3, "own"), "other": _examples(5, "other")}

    class Fake:
        def __init__(self, name):
            self.name = name

        def examples(self, manual_dir, role, cache_dir=None):
            assert role == "train" and cache_dir == "cache"
            return parts[self.name]

    class Mixed(Fake):
        def train_mixture(self, manual_dir):
            return [MixtureSource("own", manual_dir), MixtureSource("other", manual_dir)]

    monkeypatch.setattr(registry, "get_task", lambda name: Fake(name))
    mixed = training_examples(Mixed("own"), "raw", cache_dir="cache", seed=0)
    assert len(mixed) == 8 and {mixed[i].id[:3] for i in range(40)} == {"own", "oth"}
    assert training_examples(Fake("own"), "raw", cache_dir="cache") is parts["own"]
