"""Does a nano checkpoint learn to read with more steps? A learning curve of the shuffled-image gap.

    python bench/reading_curve.py runs/nano-v3/checkpoints/nano-s-64.npz --rounds 3 --steps 300
    python bench/reading_curve.py checkpoints/nano/nano-s-32.npz --tasks mimic_cxr --freeze img_tower
    python bench/reading_curve.py checkpoints/nano/nano-s-32.npz --tasks vqav2 mimic_cxr=3 --freeze img_tower

Continues a pretrained checkpoint at its own resolution on part of the pretraining mixture
(`configs/pretrain/nano.yaml`'s data; by default the text-heavy part: DocVQA, ICDAR'15, PubTabNet and the
OCR mixture, equal weights; `--tasks` names others, with weights), in rounds of `--steps` steps (each round a fresh
schedule at the pretraining lr, as a new stage would be; `--freeze` as a stage's `freeze:`), and after each
round prints the image gap of `bench/image_use.py` on the demo's eval split for those tasks. A gap
that grows with steps says reading is a matter of pretraining compute; a flat one says something else is
missing (legibility, model capacity). A demo diagnostic for issue 12, not a shipped checkpoint: nothing is
written except the optional `--save`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.image_use import task_losses  # noqa: E402
from harness.data import mixture_batches  # noqa: E402
from harness.grid import load_grid  # noqa: E402
from harness.pretrain import (  # noqa: E402
    FREEZABLE,
    OCR,
    Stage,
    freeze_flags,
    load_spec,
    pretraining_sources,
    trains_tower,
)
from harness.scheduler import prepare_demo_data  # noqa: E402
from harness.train import TrainConfig, train  # noqa: E402
from model import checkpoint  # noqa: E402
from model.config import config_for  # noqa: E402
from model.tokenizer import Tokenizer  # noqa: E402

TEXT_TASKS = ("docvqa", "icdar15", "pubtabnet")


def image_gaps(params, size: str, resolution: int, grid, tasks: tuple[str, ...]) -> dict[str, float]:
    """Shuffled-minus-right loss per task on the grid's eval split (nats per target token)."""
    gaps = {}
    for name in tasks:
        right, wrong = task_losses(params, size, resolution, grid, name)
        gaps[name] = wrong - right
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a <size>-<resolution>.npz pretrained checkpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="steps per round (batch and lr: the config's)")
    parser.add_argument("--pretrain", default="configs/pretrain/nano.yaml")
    parser.add_argument("--grid", default="configs/grids/demo.yaml", help="whose eval split is scored")
    parser.add_argument("--save", help="write the last round's params here (.npz)")
    parser.add_argument("--tasks", nargs="+", default=[*TEXT_TASKS, OCR], metavar="TASK[=WEIGHT]",
                        help=f"the mixture, weight 1 unless given ('{OCR}': the OCR views; default: the text-heavy "
                             f"tasks and '{OCR}'); gaps are printed for each task but '{OCR}'")
    parser.add_argument("--img-tower-lr-mult", type=float, default=1.0, metavar="F",
                        help="train the image tower at F x the lr, as a stage's `img_tower_lr_mult:` (default 1)")
    parser.add_argument("--freeze", nargs="*", default=[], choices=FREEZABLE,
                        help="keep these fixed, as a pretraining stage's `freeze:` (the committed config "
                             "freezes img_tower after stage 0)")
    args = parser.parse_args()
    try:
        weights = {t.split("=")[0]: float(t.split("=")[1]) if "=" in t else 1.0 for t in args.tasks}
    except ValueError:
        parser.error(f"--tasks: expected TASK or TASK=WEIGHT with a number, got {args.tasks}")
    tasks = tuple(t for t in weights if t != OCR)
    if args.img_tower_lr_mult != 1.0 and not trains_tower(args.freeze):
        parser.error(f"--img-tower-lr-mult {args.img_tower_lr_mult}: expected a tower that trains, got --freeze "
                     + " ".join(args.freeze))

    if args.save:  # made now: a missing folder must not cost the run its params at the end
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
    size, resolution = Path(args.checkpoint).stem.rsplit("-", 1)
    resolution = int(resolution)
    spec, grid = load_spec(args.pretrain), load_grid(args.grid, check_files=False)
    prepare_demo_data(grid)
    config = config_for(size, resolution)
    _, params = checkpoint.load_npz(args.checkpoint, config, dtype=np.float32)
    stage = Stage(name="reading", resolution=resolution, steps=args.steps, text_len=96, weights=weights)
    sources = pretraining_sources(spec, stage)
    tokenizer = Tokenizer(spec.tokenizer)
    gaps = image_gaps(params, size, resolution, grid, tasks)
    print(f"{'steps':>6} " + " ".join(f"{t:>10}" for t in tasks) + "   (gap, nats/token)", flush=True)
    print(f"{0:>6} " + " ".join(f"{gaps[t]:+10.3f}" for t in tasks), flush=True)
    for r in range(1, args.rounds + 1):
        batches = mixture_batches(sources, tokenizer, text_len=stage.text_len, resolution=resolution,
                                  batch_size=spec.batch_size, num_steps=args.steps, seed=spec.data_seed + 100 + r)
        cfg = TrainConfig(lr=spec.lr, num_steps=args.steps, weight_decay=spec.weight_decay, seed=100 + r,
                          img_tower_lr_mult=args.img_tower_lr_mult, **freeze_flags(args.freeze))
        t0 = time.perf_counter()
        params, summary = train(config, params, batches, cfg, progress=False)
        params = jax.tree.map(np.asarray, params)
        gaps = image_gaps(params, size, resolution, grid, tasks)
        print(f"{r * args.steps:>6} " + " ".join(f"{gaps[t]:+10.3f}" for t in tasks)
              + f"   loss {summary['final_loss']:.3f}, {time.perf_counter() - t0:.0f} s", flush=True)
    if args.save:
        checkpoint.save_npz(args.save, params)


if __name__ == "__main__":
    main()
