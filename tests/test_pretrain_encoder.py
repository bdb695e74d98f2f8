"""Stage 0 (harness/pretrain/encoder.py): the encoder alone learns to tell images apart by the tokens of
their text, resumes bit-identically after an interruption, and hands its tower to the VLM stages."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from harness.cell.train import TrainConfig
from harness.pretrain.encoder import (
    EncoderClassifier,
    bag_of_tokens,
    load_encoder,
    save_encoder,
    train_encoder,
    with_encoder,
)
from harness.pretrain.stages import load_spec, pretrain
from model import checkpoint
from model.config import VisionConfig, config_for
from model.paligemma import init_params
from tests.test_pretrain import tiny_spec

VISION = VisionConfig(image_size=16, width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=8)
VOCAB = 12


def test_bag_of_tokens_is_the_normalised_set_of_target_tokens():
    text = jnp.array([[2, 9, 5, 7, 5, 1, 0], [2, 9, 1, 0, 0, 0, 0]])
    mask_loss = jnp.array([[0, 0, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0]])  # row 2: only EOS is a target
    bag = np.asarray(bag_of_tokens(text, mask_loss, VOCAB, ignore=(0, 1, 2)))
    expected = np.zeros((2, VOCAB))
    expected[0, [5, 7]] = 0.5  # 5 twice counts once; the prefix's 9 and the EOS never count
    np.testing.assert_allclose(bag, expected)


def _batches(num: int, seed: int = 0) -> list[dict]:
    """Dark images say token 4, light ones token 6 (with 3 in both): a signal only the pixels carry."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        light = rng.integers(0, 2, 8)
        image = np.where(light[:, None, None, None], 0.8, -0.8) + rng.normal(0, 0.1, (8, 16, 16, 3))
        text = np.stack([[2, 9, 3, 6 if lt else 4, 1] for lt in light]).astype(np.int32)
        mask_loss = np.tile(np.array([0, 0, 1, 1, 1], np.int32), (8, 1))
        out.append(dict(image=image.astype(np.float32), text=text, mask_loss=mask_loss))
    return out


def _cfg(steps: int, every: int = 0) -> TrainConfig:
    return TrainConfig(lr=3e-3, num_steps=steps, seed=0, checkpoint_every=every)


@pytest.mark.slow
def test_encoder_learns_what_the_pixels_say():
    batches = _batches(60)
    img, summary = train_encoder(VISION, VOCAB, batches, _cfg(60), ignore=(0, 1, 2), progress=False)
    # The target is {3: 1/2, 4 or 6: 1/2}: a perfect reader's loss is its entropy ln 2 = 0.69; one blind
    # to the pixels can do no better than {3: 1/2, 4: 1/4, 6: 1/4}, 1.5 ln 2 = 1.04.
    assert summary["final_loss"] < 0.8
    assert set(img) == {"embedding", "pos_embedding", "Transformer", "head"}


def test_interrupted_stage_resumes_bit_identically(tmp_path):
    batches = _batches(6)
    whole, _ = train_encoder(VISION, VOCAB, batches, _cfg(6), ignore=(0, 1, 2), progress=False)

    class Interrupted(Exception):
        pass

    class Failing(list):
        def __getitem__(self, k):
            if k == 5:
                raise Interrupted
            return super().__getitem__(k)

    with pytest.raises(Interrupted):
        train_encoder(VISION, VOCAB, Failing(batches), _cfg(6, every=2), ignore=(0, 1, 2),
                      workdir=tmp_path, progress=False)
    resumed, _ = train_encoder(VISION, VOCAB, batches, _cfg(6, every=2), ignore=(0, 1, 2),
                               workdir=tmp_path, progress=False)
    for a, b in zip(checkpoint.flatten(whole).values(), checkpoint.flatten(resumed).values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vlm_takes_the_tower_but_keeps_its_own_projector(tmp_path):
    config = config_for("nano-s", 32)
    model = EncoderClassifier(config.vision, VOCAB)
    img = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))["params"]["img"]
    save_encoder(tmp_path / "encoder-32.npz", img)
    loaded = load_encoder(tmp_path / "encoder-32.npz")
    params = init_params(config, jax.random.key(0))
    merged = with_encoder(params, loaded)
    np.testing.assert_array_equal(merged["img"]["pos_embedding"], loaded["pos_embedding"])
    assert merged["img"]["head"] is params["img"]["head"]  # the projector into the LLM's width
    assert merged["llm"] is params["llm"]
    with pytest.raises(ValueError, match="encoder-bad.npz: expected a stage-0 encoder"):
        checkpoint.save_npz(str(tmp_path / "encoder-bad.npz"), {"llm": {"x": np.zeros(2)}})
        load_encoder(tmp_path / "encoder-bad.npz")


def _with_stage0(tmp_path: Path, **extra) -> Path:
    path = tiny_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"].insert(0, {"name": "s0", "kind": "encoder", "resolution": 64, "steps": 2, "text_len": 32,
                             "num_train": 6, "batch_size": 4, "weights": {"ocr": 1.0}, **extra})
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_pretrain_runs_stage0_once_and_starts_stage1_from_it(tmp_path):
    path = _with_stage0(tmp_path)
    spec = load_spec(path)
    written = pretrain(path, max_resolution=32, progress=False)
    assert [p.name for p in written] == ["nano-s-32.npz"]
    encoder = spec.out / "encoder-64.npz"
    assert encoder.exists() and (spec.data_root / "n6" / "docvqa").is_dir()
    stamp = encoder.stat().st_mtime_ns
    pretrain(path, progress=False)  # the second run keeps stage 0 and stage 1
    assert encoder.stat().st_mtime_ns == stamp
    # Stage 1 started from stage 0's tower: its patch embedding is stage 0's plus two small steps.
    start = load_encoder(encoder)["embedding"]["kernel"]
    _, p32 = checkpoint.load_npz(str(written[0]), config_for("nano-s", 32))
    fresh = init_params(config_for("nano-s", 32), jax.random.key(0))["img"]["embedding"]["kernel"]
    after = np.asarray(p32["img"]["embedding"]["kernel"], np.float32)
    assert np.abs(after - start).max() < np.abs(after - np.asarray(fresh)).max()


def test_bad_stage_kind_is_named(tmp_path):
    path = _with_stage0(tmp_path, kind="contrastive")
    with pytest.raises(ValueError, match=r"stages\[0\].kind: expected one of \('vlm', 'encoder'\)"):
        load_spec(path)


def test_stage_data_size_per_task(tmp_path):
    """`num_train` is one size for every task or {task: n, all: n}; without it a stage uses the spec's data."""
    spec = load_spec(_with_stage0(tmp_path, num_train={"docvqa": 9, "all": 5}))
    assert spec.stages[0].train_size("docvqa", 4) == 9 and spec.stages[0].train_size("icdar15", 4) == 5
    assert spec.stages[1].train_size("docvqa", 4) is None


def test_a_stage_can_keep_the_encoder_and_train_its_projector(tmp_path):
    """`freeze: [img_tower]` keeps stage 0's tower through a VLM stage while the projector `img/head` (zero
    at init) and the language model learn to use it."""
    path = _with_stage0(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"][1]["freeze"] = ["img_tower"]
    path.write_text(yaml.safe_dump(raw))
    written = pretrain(path, max_resolution=32, progress=False)
    start = load_encoder(load_spec(path).out / "encoder-64.npz")
    _, p32 = checkpoint.load_npz(str(written[0]), config_for("nano-s", 32))
    np.testing.assert_array_equal(np.asarray(p32["img"]["embedding"]["kernel"], np.float32),
                                  start["embedding"]["kernel"])
    assert np.abs(np.asarray(p32["img"]["head"]["kernel"], np.float32)).max() > 0  # the projector trained
    raw["stages"][1]["freeze"] = ["vision"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"stages\[1\].freeze: expected a list of 'img_tower' / 'img' / 'llm'"):
        load_spec(path)
