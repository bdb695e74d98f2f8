"""Is the demo's DocVQA text readable at a resolution by a model trained only to read it? A direct probe.

    python bench/legibility_probe.py                       # the pretraining data's DocVQA pages, 32 and 64 px

`bench/demo_legibility.py` measures the text's height in pixels; this measures whether a small CNN, trained
for nothing else, can read it after the harness's resize (`harness.data.preprocess_image`). For each page of
DocVQA's generated data (the release-format OCR files give the truth) it learns two labels from the pixels:
the page's title (8 kinds, bold type) and its first `Key: value` line (field kind and value together, the
body type that DocVQA's questions ask about). Pages are split 80/20; the test accuracy at each resolution,
against the majority-class rate, says whether the content is legible there. A demo diagnostic for issue 12:
a pretrained nano VLM that does not read text the probe reads lacks training, not pixels.

    python bench/legibility_probe.py --reader vit           # the nano VLM's own image encoder as the reader
    python bench/legibility_probe.py --reader vit --init checkpoints/nano/encoder-64.npz   # ... after stage 0

`--reader vit` swaps the CNN for the nano family's SigLIP encoder (`model/siglip.py`, the VLM's own image
tower, from random init) with a linear head per label on its flattened tokens: what the same pixels and the
same few hundred pages teach the architecture the VLM must read with, with a direct label instead of a
language model's loss. A ViT that reads less than the CNN from the same pages says the encoder, trained from
scratch, is short of data (PaliGemma starts from a SigLIP pretrained on billions of pairs). `--init` starts
it from the nano family's stage 0 instead (harness/pretrain_encoder.py): what that stage gives the VLM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from harness.data import preprocess_image  # noqa: E402
from harness.pretrain_encoder import load_encoder, with_encoder  # noqa: E402
from harness.train import img_tower_labels  # noqa: E402
from model.config import NANO_VIT, VisionConfig  # noqa: E402
from model.posemb import resample_posemb  # noqa: E402
from model.siglip import SigLIP  # noqa: E402


class Reader(nn.Module):
    """Three conv blocks and a linear head per label: small, but ample for 8-70 classes of fixed layout."""
    classes: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in (32, 64, 128):
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(256)(x))
        return [nn.Dense(n)(x) for n in self.classes]


class ViTReader(nn.Module):
    """The nano VLM's image encoder (random init) with a linear head per label on its pooled tokens.

    `pool` says how the tokens reach the heads. "flat": all tokens concatenated, so a head has its own
    weights for every position (the most a linear layer can read). "attn": one learned query attends over
    the tokens (4 heads, as the nano LMs), which reads by content as the VLM's attention layers do, and must
    find the tokens that matter among 16 / 64 at 32 / 64 px. "mean": the tokens' average (the least)."""
    classes: tuple[int, ...]
    pool: str = "flat"

    @nn.compact
    def __call__(self, x):
        vision = VisionConfig(image_size=x.shape[1], **NANO_VIT)
        tokens = SigLIP(vision, out_dim=vision.width, name="img")(x)
        if self.pool == "flat":
            features = tokens.reshape(tokens.shape[0], -1)
        elif self.pool == "mean":
            features = tokens.mean(axis=1)
        else:
            query = self.param("query", nn.initializers.normal(0.02), (1, 1, vision.width))
            query = jnp.broadcast_to(query, (tokens.shape[0], 1, vision.width))
            features = nn.MultiHeadDotProductAttention(num_heads=NANO_VIT["num_heads"])(query, tokens)[:, 0]
        features = nn.LayerNorm()(features)
        return [nn.Dense(n)(features) for n in self.classes]


READERS = {"cnn": Reader, "vit": ViTReader}
POOLS = ("flat", "attn", "mean")


def load_pages(docvqa_dir: Path) -> tuple[list[np.ndarray], list[str], list[dict[str, str]]]:
    """(page pixels, title, {field kind: value}) for every page that has a release OCR file."""
    images, titles, fields = [], [], []
    for ocr in sorted((docvqa_dir / "ocr_results").glob("*.json")):
        lines = [line["text"] for page in json.loads(ocr.read_text())["recognitionResults"]
                 for line in page["lines"]]
        matches = list((docvqa_dir / "documents").glob(ocr.stem + ".*"))
        if len(lines) < 2 or not matches:
            continue
        with Image.open(matches[0]) as page:
            images.append(np.asarray(page.convert("RGB")))
        titles.append(lines[0])
        fields.append(dict(line.split(": ", 1) for line in lines[1:] if ": " in line))
    return images, titles, fields


def encode(labels: list[str | None]) -> tuple[np.ndarray, int]:
    """Class ids (-1 where a page has no such label) and the number of classes."""
    vocab = {v: i for i, v in enumerate(sorted({v for v in labels if v is not None}))}
    return np.array([-1 if v is None else vocab[v] for v in labels]), len(vocab)


def frozen_tower_labels(params: dict) -> dict:
    """'frozen' for the ViT reader's image tower, 'train' for its projector `head` and the label heads:
    the split the VLM stages make with `freeze: [img_tower]` (harness/train.py)."""
    labels = jax.tree.map(lambda _: "train", params)
    labels["params"]["img"] = img_tower_labels(params["params"]["img"])
    return labels


def probe(x: np.ndarray, ys: list[np.ndarray], classes: tuple[int, ...], *, steps: int, seed: int,
          reader: str = "cnn", init: Path | None = None, frozen: bool = False, pool: str = "flat") -> list[float]:
    """Train on the first 80% of images, return each label's accuracy on the last 20%. `init` (vit only):
    start the encoder from a stage-0 encoder (harness/pretrain_encoder.py) instead of random init.
    `frozen` (vit only): keep the tower fixed and train only the projector and the heads, as the VLM
    stages train on top of the shipped tower: what the tower's features expose, not what it could learn.
    `pool` (vit only): how the tokens reach the heads (`ViTReader`)."""
    cut = int(0.8 * len(x))
    model = Reader(classes) if reader == "cnn" else ViTReader(classes, pool=pool)
    params = model.init(jax.random.key(seed), x[:1])
    if init is not None:
        img = load_encoder(init)
        img["pos_embedding"] = resample_posemb(img["pos_embedding"], (x.shape[1] // NANO_VIT["patch_size"]) ** 2)
        params = {"params": with_encoder(params["params"], img)}  # the reader keeps its own `head`
    opt = optax.adam(1e-3)
    if frozen:
        opt = optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, frozen_tower_labels(params))
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        def loss(p):
            logits = model.apply(p, xb)
            return sum((optax.softmax_cross_entropy_with_integer_labels(lg, jnp.maximum(y, 0)) * (y >= 0)).sum()
                       / jnp.maximum((y >= 0).sum(), 1) for lg, y in zip(logits, yb))
        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, cut, 64)
        params, state = step(params, state, x[idx], [y[idx] for y in ys])
    logits = model.apply(params, x[cut:])
    return [float((np.asarray(lg).argmax(-1) == y[cut:])[y[cut:] >= 0].mean()) for lg, y in zip(logits, ys)]


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `probe`, shared by this probe and bench/findings_probe.py."""
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reader", choices=sorted(READERS), default="cnn",
                        help="cnn: a small CNN (default); vit: the nano VLM's SigLIP encoder, from random init")
    parser.add_argument("--init", type=Path, default=None,
                        help="vit only: start the encoder from this stage-0 encoder (encoder-<px>.npz, written "
                             "by a pretraining config with a `kind: encoder` stage) instead of random init")
    parser.add_argument("--frozen", action="store_true",
                        help="vit with --init only: keep the tower fixed, train the projector and heads (what "
                             "the tower exposes to the VLM stages, which keep it frozen)")
    parser.add_argument("--pool", choices=POOLS, default="flat",
                        help="vit only: how the tokens reach the heads. flat: concatenated (default; a weight per "
                             "position); attn: one learned query attends over them, reading by content as the "
                             "VLM's attention does; mean: their average")


def check_probe_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """One-line errors for option combinations `probe` cannot run."""
    if args.init is not None and args.reader != "vit":
        parser.error("--init: expected --reader vit (only the ViT reader has a stage-0 encoder to start from)")
    if args.pool != "flat" and args.reader != "vit":
        parser.error(f"--pool {args.pool}: expected --reader vit (the CNN reader has no tokens to pool)")
    if args.frozen and args.init is None:
        parser.error("--frozen: expected --init (a frozen random tower says nothing about the shipped one)")
    return args


def describe_reader(args: argparse.Namespace) -> str:
    """The reader as the probes' first output line names it, e.g. 'vit from encoder-64.npz, tower frozen'."""
    pool = f", {args.pool} pool" if args.pool != "flat" else ""
    return f"{args.reader}{f' from {args.init}' if args.init else ''}{', tower frozen' if args.frozen else ''}{pool}"


def majority_rate(y: np.ndarray, cut: int) -> float:
    """Test accuracy of always answering the train split's most common class (y[:cut] train, y[cut:] test,
    -1 = no label); nan where the train or test split has no labelled example."""
    train, test = y[:cut][y[:cut] >= 0], y[cut:][y[cut:] >= 0]
    if not len(train) or not len(test):  # a kind no train (or test) page has: nothing to compare
        return float("nan")
    return float((test == np.bincount(train).argmax()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/pretrain-data-v3/docvqa",
                        help="a DocVQA folder in the release layout with ocr_results/ (default: the pretraining "
                             "data; `paligemma-transfer pretrain` writes it)")
    add_probe_arguments(parser)
    args = check_probe_arguments(parser, parser.parse_args())

    data = Path(args.data)
    if not (data / "ocr_results").is_dir():
        sys.exit(f"{data}/ocr_results: missing; expected a DocVQA folder with release OCR files "
                 f"(run `paligemma-transfer pretrain` once, or pass --data)")
    images, titles, fields = load_pages(data)
    order = np.random.default_rng(args.seed).permutation(len(images))
    kinds = sorted({k for f in fields for k in f})
    labels = [encode([titles[i] for i in order])] + [encode([fields[i].get(k) for i in order]) for k in kinds]
    ys, classes = [y for y, _ in labels], tuple(n for _, n in labels)
    # "values": the mean over the kinds with a bounded vocabulary (<= 32 values: names, cities, ...); the
    # numbers (hundreds of distinct values, a few examples each) are shown but would need a reader of digit
    # sequences, not a classifier, to say anything.
    bounded = [i for i, n in enumerate(classes[1:], start=1) if n <= 32]
    cut = int(0.8 * len(images))

    print(f"reader: {describe_reader(args)}; ", end="")
    print(f"{len(images)} pages ({len(images) - cut} test); title: {classes[0]} classes; values of "
          + ", ".join(f"{k} ({n})" for k, n in zip(kinds, classes[1:])))
    print(f"{'px':>9} {'title':>7} {'values':>7}  " + " ".join(f"{k[:8]:>8}" for k in kinds))

    def row(label: str, acc: list[float]) -> str:
        values = np.mean([acc[i] for i in bounded])
        return f"{label:>9} {acc[0]:>7.2f} {values:>7.2f}  " + " ".join(f"{a:>8.2f}" for a in acc[1:])

    print(row("majority", [majority_rate(y, cut) for y in ys]))
    for res in args.resolutions:
        x = np.stack([preprocess_image(images[i], res) for i in order])
        t0 = time.perf_counter()
        acc = probe(x, ys, classes, steps=args.steps, seed=args.seed, reader=args.reader,
                    init=args.init, frozen=args.frozen, pool=args.pool)
        print(row(f"{res} px", acc) + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
