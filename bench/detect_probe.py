"""Can a nano model learn to find and name one large shape? A floor under bench/localisation_probe.py.

    python bench/detect_probe.py random:nano-s-64                        # from random init
    python bench/detect_probe.py runs/nano-v5/checkpoints/nano-s-64.npz   # from a checkpoint, tower frozen
    python bench/detect_probe.py CKPT --train-tower                      # the tower trained too
    python bench/detect_probe.py random:nano-s-32 --head-init normal     # the projector not zero at init

Each scene is 256 px: a smooth random background (a 3x4 grid of colours, bicubic) and one circle, square or
triangle 40-100 px wide in another colour, anywhere. Prompt `detect shape`, target the shape's box as four
`<locNNNN>` tokens (y0 x0 y1 x1, model/tokenizer.loc_tokens) and its name, the layout of PaliGemma's
`detect` task (docs/paligemma2-facts.md §1.6). Fresh scenes every step (nothing to memorise), `--steps`
steps of batch 32 at `--lr`, then the image gap per token kind on `--num-eval` new scenes
(bench/localisation_probe.gap_by_kind: loss with another scene's image minus with the right one; the
name's tokens are the text kind). If a model from random init learns this and a checkpoint does
not, the checkpoint is at fault; if neither does, the recipe is. A demo diagnostic for issue 12
(docs/demo-sensitivity.md §10): nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.image_use import batched, parse_checkpoint, rolled  # noqa: E402
from bench.localisation_probe import print_gaps, token_nll  # noqa: E402
from harness.cell import base_params, tokenizer_for  # noqa: E402
from harness.data import TextSpec, train_row  # noqa: E402
from harness.train import TrainConfig, train  # noqa: E402
from model.config import config_for  # noqa: E402
from model.paligemma import PaliGemma  # noqa: E402
from model.tokenizer import loc_tokens  # noqa: E402
from tasks.base import Example  # noqa: E402

SCENE_PX = 256
SHAPES = ("circle", "square", "triangle")


def scene(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One 256 px scene and its `detect` target."""
    grid = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = Image.fromarray(grid).resize((SCENE_PX, SCENE_PX), Image.Resampling.BICUBIC)
    side = int(rng.integers(40, 101))
    x0, y0 = (int(v) for v in rng.integers(0, SCENE_PX - side, 2))
    x1, y1 = x0 + side, y0 + side
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=colour)
    box = loc_tokens(np.array([y0, x0, y1, x1]) / SCENE_PX)
    return np.asarray(img), f"{box} {kind}"


def rows(rng: np.random.Generator, n: int, tokenizer, spec: TextSpec) -> list[dict]:
    out = []
    for i in range(n):
        image, target = scene(rng)
        out.append(train_row(Example(str(i), image, "detect shape", (target,), target), target, tokenizer, spec))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a nano checkpoint named <size>-<resolution>.npz, or "
                                           "random:<size>-<resolution>")
    parser.add_argument("--steps", type=int, default=600, help="training steps of batch 32 (default 600)")
    parser.add_argument("--lr", type=float, default=1e-3, help="the pretraining lr (default 1e-3)")
    parser.add_argument("--num-eval", type=int, default=160, help="eval scenes scored (default 160)")
    parser.add_argument("--head-init", choices=("as-is", "normal"), default="as-is",
                        help="normal: redraw the projector `img/head` (zero at random init, as big_vision's) "
                             "from a lecun-normal, so a random tower gets gradient from the first step")
    parser.add_argument("--train-tower", action="store_true",
                        help="train a checkpoint's image tower too (random init always trains it)")
    args = parser.parse_args()

    name, path = parse_checkpoint(args.checkpoint)
    size, resolution = name.rsplit("-", 1)
    config = config_for(size, int(resolution))
    tokenizer = tokenizer_for(config, {})
    spec = TextSpec(text_len=24, square_pad=False, resolution=int(resolution))
    params = base_params(config, path, 0)
    if args.head_init == "normal":
        kernel = params["img"]["head"]["kernel"]
        params["img"]["head"]["kernel"] = jax.nn.initializers.lecun_normal()(jax.random.key(1), kernel.shape)

    rng = np.random.default_rng(0)
    batches = []
    for _ in range(args.steps):
        train_rows = rows(rng, 32, tokenizer, spec)
        batches.append({k: np.stack([r[k] for r in train_rows]) for k in train_rows[0]})
    freeze = path != "random" and not args.train_tower
    cfg = TrainConfig(lr=args.lr, num_steps=args.steps, freeze_img_tower=freeze)
    params, summary = train(config, params, batches, cfg, progress=None, desc=f"detect {name}")
    print(f"{name}: {args.steps} steps, tower {'frozen' if freeze else 'trained'}, final train loss "
          f"{summary['final_loss']:.3f}")

    eval_rows = rows(np.random.default_rng(1), args.num_eval, tokenizer, spec)
    nll = token_nll(PaliGemma(config))
    right, wrong = batched(nll, params, eval_rows), batched(nll, params, rolled(eval_rows))
    print_gaps(right, wrong, eval_rows, tokenizer.loc_id(0), f"{args.num_eval} scenes")
    print(f"(chance for the name: log 3 = {np.log(3):.3f} nats on its token)")


if __name__ == "__main__":
    main()
