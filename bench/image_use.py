"""How much a model's predictions depend on the image: the loss with each example's own image against the
loss with another example's image, per task.

    python bench/image_use.py                                  # the demo grid's checkpoints, its eval data
    python bench/image_use.py --checkpoints random:nano-s-32 checkpoints/nano/nano-m-64.npz
    python bench/image_use.py --by-prompt                      # ... and per prompt (DocVQA's question kinds)
    python bench/image_use.py --checkpoints checkpoints/nano/nano-s-32.npz --lift-to 64 \
        --encoder checkpoints/nano/encoder-64.npz              # a 32 px checkpoint as the 64 px stage starts it

For every task of the demo grid it scores the eval split's targets (teacher forcing, the trainer's loss:
mean cross-entropy per suffix token, averaged over examples) twice: with the right images, and with the
images rolled by one position across the split. The gap (shuffled - right, nats per token) is what the
image tells the model about the target; 0 means the model answers from the prompt alone. `se` is the
gap's standard error over the split's examples (the std of the per-example gaps over sqrt(n)): a gap of
+0.092 with se 0.004 is below a 0.1 bar, one with se 0.02 is not shown to be. A demo
diagnostic, not a benchmark of speed: it explains demo tables in which a task's outputs are the same for
every image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from harness.cell import base_params, split_overrides, tokenizer_for, transfer_config  # noqa: E402
from harness.data import TextSpec, train_row  # noqa: E402
from harness.grid import RANDOM_INIT, load_grid  # noqa: E402
from harness.pretrain import continue_at  # noqa: E402
from harness.pretrain_encoder import load_encoder, with_encoder  # noqa: E402
from harness.scheduler import prepare_demo_data  # noqa: E402
from harness.train import per_example_loss  # noqa: E402
from model.config import config_for  # noqa: E402
from model.paligemma import PaliGemma  # noqa: E402
from tasks.registry import get_task  # noqa: E402


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


def task_losses(params, size: str, resolution: int, grid, task_name: str, split: str = "eval",
                data_root: str | None = None) -> tuple[float, float]:
    """(mean loss with the right images, with the images rolled by one) for one task of `grid`."""
    right, wrong, _ = example_losses(params, size, resolution, grid, task_name, split, data_root)
    return float(right.mean()), float(wrong.mean())


def main() -> None:
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
                        help="one gap per distinct prompt (e.g. DocVQA's question kinds: a title is legible at "
                             "32 px, a year's digits only at 64) for tasks with at most 12 distinct prompts")
    parser.add_argument("--prompt-words", type=int, metavar="N",
                        help="with --by-prompt, group prompts by their first N words (e.g. 4 for VQAv2's "
                             "'answer en what shape ...' against '... what color ...')")
    parser.add_argument("--lift-to", type=int, metavar="PX",
                        help="score each checkpoint at PX px as a pretraining stage at PX starts from it "
                             "(harness/pretrain.py: the position embedding resampled, --encoder's tower swapped "
                             "in), before any step at PX: what of its image use carries across resolutions")
    parser.add_argument("--encoder", type=Path,
                        help="with --lift-to: the stage-0 encoder the stage swaps in (encoder-<px>.npz)")
    args = parser.parse_args()
    if args.encoder and not args.lift_to:
        parser.error("--encoder: expected --lift-to PX (the encoder is swapped in when a stage changes resolution)")

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
        if args.lift_to:
            if args.encoder:
                params = with_encoder(params, load_encoder(args.encoder))
            params = continue_at(params, config_for(size, args.lift_to))
            resolution, spec = args.lift_to, f"{spec}@{args.lift_to}"
        for task_name in grid.tasks:
            right, wrong, prompts = example_losses(params, size, int(resolution), grid, task_name, args.split,
                                                   args.data_root, args.limit)
            print(f"{spec:<34} {task_name:<14} {right.mean():7.3f} {wrong.mean():9.3f} "
                  f"{wrong.mean() - right.mean():+7.3f} {gap_se(right, wrong):6.3f}")
            if args.prompt_words:
                prompts = np.array([" ".join(p.split()[:args.prompt_words]) for p in prompts])
            kinds = sorted(set(prompts))
            for prompt in kinds if args.by_prompt and len(kinds) <= 12 else ():
                r, w = right[prompts == prompt].mean(), wrong[prompts == prompt].mean()
                print(f"{'':<36} {prompt[:40]:<40} {r:7.3f} {w:9.3f} {w - r:+7.3f}")


if __name__ == "__main__":
    main()
