"""Does a checkpoint use the image? The loss of each task's targets with each example's own image against
the loss with another example's image.

    python -m bench.image_use                        # the demo grid's base checkpoints, its eval split
    python -m bench.image_use --split train          # its 300 training examples per task (docs/demo-findings.md §4)
    python -m bench.image_use --checkpoints random:nano-s-32 checkpoints/nano/nano-m-64.npz --by-prompt

For every task of the grid it scores the split's targets (teacher forcing, the trainer's loss: mean
cross-entropy per suffix token, averaged over examples) twice: with the right images, and with the images
rolled by one position across the split. The gap (shuffled - right, nats per token) is what the image tells
the model about the target; 0 means the model answers from the prompt alone. `se` is the gap's paired
standard error over the split's examples (the std of the per-example gaps over sqrt(n)): a gap of +0.092
with se 0.004 is below a 0.1 bar, one with se 0.02 is not shown to be. With `--by-prompt`, one gap per
distinct prompt as well (DocVQA's question kinds: a title is legible at 32 px, a year's digits only at 64).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from harness.cell.data import TextSpec, train_row
from harness.cell.recipe import split_overrides, transfer_config
from harness.cell.run_cell import base_params, tokenizer_for
from harness.cell.train import per_example_loss
from harness.run.demo_data import prepare_demo_data
from harness.run.grid import RANDOM_INIT, load_grid
from model.config import config_for
from model.paligemma import PaliGemma
from tasks.registry import get_task


def parse_checkpoint(spec: str) -> tuple[str, str]:
    """'path/nano-s-32.npz' or 'random:nano-s-32' -> (config name, checkpoint path or 'random')."""
    if spec.startswith("random:"):
        return spec.split(":", 1)[1], "random"
    return Path(spec).stem, spec


def task_inputs(size: str, resolution: int, grid, task_name: str) -> tuple:
    """(task, config, tokenizer, text spec) of one task of `grid` at a size and resolution, built as the
    grid's cells build them (the task's recipe with the grid's overrides)."""
    task = get_task(task_name)
    recipe_overrides, _ = split_overrides(dict(grid.overrides[task_name]))
    recipe = task.recipe(size, resolution).replace(**recipe_overrides)
    config = transfer_config(config_for(size, resolution), recipe)
    text = TextSpec(text_len=recipe.text_len, square_pad=recipe.pad_to_square, resolution=resolution)
    return task, config, tokenizer_for(config, {}), text


def batched(fn, params, rows: list[dict], batch_size: int = 40) -> np.ndarray:
    """fn(params, batch) over `rows` in batches of stacked rows, the results concatenated."""
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        out.append(np.asarray(fn(params, {k: np.stack([r[k] for r in chunk]) for k in chunk[0]})))
    return np.concatenate(out)


def rolled(rows: list[dict]) -> list[dict]:
    """The rows with the images rolled by one position: each example gets its neighbour's image."""
    return [dict(r, image=rows[(i + 1) % len(rows)]["image"]) for i, r in enumerate(rows)]


def example_losses(params, size: str, resolution: int, grid, task_name: str, split: str = "eval",
                   data_root: str | None = None, limit: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example of one task of `grid` (the split's first `limit`, default all): (loss with the right
    image, with the images rolled by one, prompt)."""
    task, config, tokenizer, text = task_inputs(size, resolution, grid, task_name)
    source = task.examples(Path(data_root or grid.data_root) / task_name, split)
    examples = [source[i] for i in range(min(len(source), limit or len(source)))]
    rows = [train_row(ex, ex.targets[0], tokenizer, text) for ex in examples]
    model = PaliGemma(config)
    loss = jax.jit(lambda p, b: per_example_loss(  # one compilation for both passes
        model.apply({"params": p}, b["image"], b["text"][:, :-1], b["mask_ar"][:, :-1],
                    b["mask_input"][:, :-1]), b["text"][:, 1:], b["mask_loss"][:, 1:], 0.0))
    return (batched(loss, params, rows), batched(loss, params, rolled(rows)),
            np.array([ex.prefix for ex in examples]))


def gap_se(right: np.ndarray, wrong: np.ndarray) -> float:
    """Standard error of the mean gap: the examples are paired (one example, two images), so the spread
    that matters is that of the per-example differences. nan for fewer than two examples."""
    diff = np.asarray(wrong, np.float64) - np.asarray(right, np.float64)
    return float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="configs/grids/demo.yaml",
                        help="grid whose tasks, data_root and text lengths are used (default: the demo)")
    parser.add_argument("--checkpoints", nargs="+",
                        help="checkpoint files named <size>-<resolution>.npz, or random:<size>-<resolution> "
                             "(default: the grid's base checkpoints, every size at every resolution)")
    parser.add_argument("--split", default="eval")
    parser.add_argument("--data-root", help="the tasks' data folders (default: the grid's data_root)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="score the split's first N examples per task (e.g. 200 of the pretraining data's "
                             "3,000: --data-root runs/pretrain-data-v3 --split train, the loss on seen examples)")
    parser.add_argument("--by-prompt", action="store_true",
                        help="one gap per distinct prompt as well, for tasks with at most 12 distinct prompts")
    args = parser.parse_args(argv)

    grid = load_grid(args.grid, check_files=False)
    if not args.data_root:
        prepare_demo_data(grid)  # a demo grid's data is written when missing, as `paligemma-transfer run` does
    if not args.checkpoints:
        args.checkpoints = [f"random:{size}-{res}" if grid.checkpoints == RANDOM_INIT else grid.checkpoint(size, res)
                            for size in grid.sizes for res in grid.resolutions]
    print(f"{'checkpoint':<34} {'task':<14} {'right':>7} {'shuffled':>9} {'gap':>7} {'se':>6}   (nats/token)")
    for spec in args.checkpoints:
        name, path = parse_checkpoint(spec)
        size, resolution = name.rsplit("-", 1)
        params = base_params(config_for(size, int(resolution)), path, 0)
        for task_name in grid.tasks:
            right, wrong, prompts = example_losses(params, size, int(resolution), grid, task_name, args.split,
                                                   args.data_root, args.limit)
            print(f"{spec:<34} {task_name:<14} {right.mean():7.3f} {wrong.mean():9.3f} "
                  f"{wrong.mean() - right.mean():+7.3f} {gap_se(right, wrong):6.3f}")
            kinds = sorted(set(prompts))
            for prompt in kinds if args.by_prompt and len(kinds) <= 12 else ():
                r, w = right[prompts == prompt].mean(), wrong[prompts == prompt].mean()
                print(f"{'':<36} {prompt[:40]:<40} {r:7.3f} {w:9.3f} {w - r:+7.3f}")


if __name__ == "__main__":
    main()
