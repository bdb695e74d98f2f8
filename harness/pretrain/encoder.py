"""Stage 0 of the nano family: pretrain the image encoder alone, before the VLM stages.

PaliGemma never learns its encoder from scratch: its stage 0 is a SigLIP pretrained contrastively on
billions of image-text pairs (docs/paligemma2-facts.md §1.4). The nano family had no stage 0 and learned its
SigLIP inside stage 1 from ~21k generated examples: enough for colours and shapes, not for glyphs
(docs/demo-findings.md §2: the same encoder with a direct label reads a page's title at 0.59 from 1k
pages and 0.86 from 10k). Contrastive learning wants large batches of negatives; this stage uses the
classification objective of SuperClass (Huang et al., "Classification Done Right for Vision-Language
Pre-Training", NeurIPS 2024, arXiv 2411.03313), which needs neither a text encoder nor large batches and
which its authors report at or above CLIP on downstream tasks: the encoder's mean-pooled tokens,
through a linear classifier over the tokenizer's vocabulary, predict the bag of subword tokens of the
image's text (softmax cross-entropy against the normalised multi-hot target). The text is any target the
tasks give an image: OCR lines, captions, reports, answers.

The encoder trained here replaces the VLM's initial `img` tower in stage 1, except its `head` (the
projector into the language model's width, size-specific and zero-initialised as in big_vision); the
classifier is dropped. The result is stored as `{out}/encoder-{resolution}.npz` (the `img` tree) and
reused by every size.
"""

from __future__ import annotations

import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
from tqdm.auto import tqdm

from harness.cell.train import TrainConfig, make_optimizer, open_checkpoints
from model import checkpoint
from model.config import VisionConfig
from model.siglip import SigLIP, normalize_images

CLASSIFIER = "classifier"


class EncoderClassifier(nn.Module):
    """SigLIP (the VLM's image tower, named `img`) -> mean over tokens -> LayerNorm -> vocabulary logits."""

    vision: VisionConfig
    vocab_size: int

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        tokens = SigLIP(self.vision, out_dim=self.vision.width, name="img")(images)
        pooled = nn.LayerNorm(name=f"{CLASSIFIER}_norm")(tokens.mean(axis=1))
        return nn.Dense(self.vocab_size, name=CLASSIFIER)(pooled)


def bag_of_tokens(text: jax.Array, mask_loss: jax.Array, vocab_size: int, ignore: tuple[int, ...]) -> jax.Array:
    """[B, L] tokens and their loss mask -> [B, V] normalised multi-hot of the target's distinct tokens
    (SuperClass's label); `ignore` (EOS, padding) never counts. A row with no target is all zero."""
    hot = jax.nn.one_hot(text, vocab_size, dtype=jnp.float32) * mask_loss[..., None]
    bag = hot.max(axis=1)
    for token in ignore:
        bag = bag.at[:, token].set(0.0)
    return bag / jnp.maximum(bag.sum(axis=-1, keepdims=True), 1.0)


def make_step(model: EncoderClassifier, tx: optax.GradientTransformation, ignore: tuple[int, ...]):
    """The jitted train step: (params, opt_state, batch) -> (params, opt_state, loss)."""

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["image"])
        target = bag_of_tokens(batch["text"], batch["mask_loss"], model.vocab_size, ignore)
        has_target = (target.sum(-1) > 0).astype(jnp.float32)
        losses = optax.softmax_cross_entropy(logits, target) * has_target
        return losses.sum() / jnp.maximum(has_target.sum(), 1.0)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train_encoder(vision: VisionConfig, vocab_size: int, batches, cfg: TrainConfig, *,
                  ignore: tuple[int, ...], workdir: Path | None = None, progress: bool = True,
                  desc: str = "stage0") -> tuple[dict, dict]:
    """Train the encoder and classifier for cfg.num_steps on `batches[step]` (the harness's batch dicts:
    image, text, mask_loss). Resumable from workdir/ckpt every cfg.checkpoint_every steps, as the VLM
    trainer. Returns (the encoder's `img` params, summary with the final loss)."""
    model = EncoderClassifier(vision, vocab_size)
    image = np.zeros((1, vision.image_size, vision.image_size, 3), np.float32)
    params = model.init(jax.random.key(cfg.seed), image)["params"]
    tx = make_optimizer(params, cfg)
    opt_state = tx.init(params)
    start, ckpt = 0, None
    if workdir is not None and cfg.checkpoint_every > 0:
        ckpt, restored = open_checkpoints(Path(workdir) / "ckpt", cfg.checkpoint_every,
                                          {"params": params, "opt_state": opt_state, "step": np.int64(0)})
        if restored is not None:
            params, opt_state, start = restored["params"], restored["opt_state"], int(restored["step"])
    step_fn = make_step(model, tx, ignore)
    losses: list[float] = []
    bar = tqdm(range(start, cfg.num_steps), desc=desc, disable=not progress, initial=start,
               total=cfg.num_steps, mininterval=5.0)
    t0 = time.perf_counter()
    for k in bar:
        batch = {name: jnp.asarray(batches[k][name]) for name in ("image", "text", "mask_loss")}
        batch["image"] = normalize_images(batch["image"])  # the pipeline's uint8 -> [-1, 1], on the device
        params, opt_state, loss = step_fn(params, opt_state, batch)
        if (k + 1) % 20 == 0 or k + 1 == cfg.num_steps:
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if ckpt is not None and (k + 1) % cfg.checkpoint_every == 0 and k + 1 < cfg.num_steps:
            ckpt.save(k + 1, {"params": params, "opt_state": opt_state, "step": np.int64(k + 1)})
    if ckpt is not None:
        ckpt.close()
    summary = {"final_loss": losses[-1] if losses else float("nan"), "seconds": time.perf_counter() - t0}
    return jax.device_get(params["img"]), summary


def save_bf16(path: Path, params: dict) -> dict:
    """`params` as a bfloat16 big_vision .npz (like the released `.b16.npz` checkpoints: half the bytes),
    written atomically; returns the stored bfloat16 tree."""
    params = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16), params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    checkpoint.save_npz(str(tmp), params)
    tmp.replace(path)
    return params


def save_encoder(path: Path, img: dict) -> None:
    """The encoder's `img` tree as a bfloat16 .npz, like the VLM checkpoints."""
    save_bf16(path, {"img": img})


def load_encoder(path: Path) -> dict:
    """The `img` tree save_encoder wrote, as float32; a file without one is named in the error."""
    tree = checkpoint.unflatten(checkpoint.read_npz(str(path)))
    if "img" not in tree:
        raise ValueError(f"{path}: expected a stage-0 encoder (an 'img/...' tree), found {sorted(tree)[:5]}")
    return jax.tree.map(lambda x: np.asarray(x).astype(np.float32), tree["img"])


def with_encoder(params: dict, img: dict) -> dict:
    """VLM params whose image tower is `img` (from stage 0) except the projector `head`, which keeps
    the VLM's own (zero-initialised, in the language model's width)."""
    new = {k: v for k, v in img.items() if k != "head"}
    new["head"] = params["img"]["head"]
    missing = set(params["img"]) - set(new)
    if missing:
        raise ValueError(f"stage-0 encoder lacks {sorted(missing)}; expected the VLM's img tree")
    return {**params, "img": new}
