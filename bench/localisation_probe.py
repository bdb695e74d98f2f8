"""Can a nano checkpoint learn to find ICDAR'15's words? The image gap of its loc tokens after focused training.

    python bench/localisation_probe.py runs/nano-v5/checkpoints/nano-s-64.npz \
        --train-data runs/pretrain-data-v3/n10000/icdar15 --steps 600            # tower frozen
    python bench/localisation_probe.py ... --train-tower                        # tower trained too
    python bench/localisation_probe.py ... --loc-init sinusoidal                # loc rows re-initialised
    python bench/localisation_probe.py CKPT --task pubtabnet --steps 0           # table cells' boxes, as is

ICDAR'15's target is, per word, eight `<locNNNN>` tokens (four corners, y then x) and the text. Only the
first corner of a word needs the image to be found (the others follow from it and the word's size), so a
model that localises shows an image gap on the first two loc tokens of the target: `bench/image_use.py`'s
gap (loss with another scene's image minus loss with the right one, nats per token), split here into
every target token, the loc tokens, the first word's first corner and the text tokens (for PubTabNet the
text is split again: the cells' words, which only reading gives, and the HTML markup, which the table's
layout gives). The checkpoint is
trained first on ICDAR'15 alone (`--steps` steps of batch 32 at the pretraining lr, scenes drawn from
`--train-data`, the tower frozen unless `--train-tower`, as `configs/pretrain/nano.yaml`'s VLM stages
keep it), then scored on the demo's eval split. `--loc-init sinusoidal` first replaces the loc tokens'
embedding rows by sinusoids of the bin index, so neighbouring bins start alike (the pretrained rows are
nearly one shared vector). A demo diagnostic for issue 12: nothing is written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.image_use import batched, parse_checkpoint, rolled, task_inputs  # noqa: E402
from harness.cell import base_params  # noqa: E402
from harness.data import train_row  # noqa: E402
from harness.grid import load_grid  # noqa: E402
from harness.scheduler import prepare_demo_data  # noqa: E402
from harness.train import TrainConfig, train  # noqa: E402
from model.config import NUM_LOC_TOKENS as NUM_LOC  # noqa: E402
from model.config import config_for  # noqa: E402
from model.losses import token_losses  # noqa: E402
from model.paligemma import PaliGemma  # noqa: E402

LOC_TASKS = ("icdar15", "pubtabnet")  # the demo tasks whose targets hold loc tokens


def sinusoidal_rows(num: int, width: int, norm: float) -> np.ndarray:
    """[num, width] rows: sin and cos of the bin's position at width/2 frequencies from 1/4 to 64 cycles
    over the range, each row scaled to `norm`."""
    u = (np.arange(num) + 0.5) / num
    freqs = 0.25 * (64 / 0.25) ** (np.arange(width // 2) / (width // 2 - 1))
    angles = 2 * np.pi * freqs[None] * u[:, None]
    rows = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    return (rows * norm / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def token_nll(model: PaliGemma):
    """A jitted fn(params, batch) -> negative log-likelihood of each target token [B, T-1]."""
    return jax.jit(lambda p, b: token_losses(
        model.apply({"params": p}, b["image"], b["text"][:, :-1], b["mask_ar"][:, :-1], b["mask_input"][:, :-1]),
        b["text"][:, 1:], 0.0))


# A cell's words in PubTabNet's HTML: text between a tag's `>` and the next `<`, quotes excluded (the `">`
# that closes `<td coords="<loc..>...">` is markup).
CELL_TEXT = re.compile(r'(?<=>)[^<>"]+(?=<)')


def cell_text_tokens(ids: np.ndarray, tokenizer) -> np.ndarray:
    """[T] bool: which of a PubTabNet target's token ids spell a cell's words. A token's characters are
    where decoding the ids before it ends and decoding through it ends; it is a word token when they
    overlap a CELL_TEXT span of the decoded target (so a token like '%</', a word's end and a tag's start,
    counts as a word token)."""
    text = tokenizer.decode(ids)
    is_word = np.zeros(len(text) + 1, bool)
    for match in CELL_TEXT.finditer(text):
        is_word[match.start():match.end()] = True
    ends = [len(tokenizer.decode(ids[:k])) for k in range(len(ids) + 1)]
    return np.array([is_word[ends[k]:max(ends[k + 1], ends[k])].any() for k in range(len(ids))], bool)


def gap_by_kind(right: np.ndarray, wrong: np.ndarray, batch: dict, loc0: int,
                words: np.ndarray | None = None) -> dict[str, tuple]:
    """{kind: (right, shuffled, gap, tokens)} over the loss tokens of each kind. `words` ([B, T-1] bool,
    PubTabNet's cell words) splits the text tokens into "cell words" and "markup"."""
    targets, mask = batch["text"][:, 1:], batch["mask_loss"][:, 1:].astype(bool)
    is_loc = (targets >= loc0) & (targets < loc0 + NUM_LOC)
    first_corner = is_loc & (np.cumsum(is_loc, axis=1) <= 2)
    kinds = {"all": mask, "loc": mask & is_loc, "first corner": mask & first_corner, "text": mask & ~is_loc}
    if words is not None:
        kinds.update({"cell words": mask & ~is_loc & words, "markup": mask & ~is_loc & ~words})
    return {name: (float(right[sel].mean()), float(wrong[sel].mean()), float((wrong - right)[sel].mean()),
                   int(sel.sum())) for name, sel in kinds.items() if sel.any()}


def word_mask(batch: dict, tokenizer) -> np.ndarray:
    """cell_text_tokens of every row's loss tokens, as a [B, T-1] mask aligned with the targets."""
    targets, mask = batch["text"][:, 1:], batch["mask_loss"][:, 1:].astype(bool)
    out = np.zeros_like(mask)
    for i in range(len(targets)):
        where = np.flatnonzero(mask[i])
        out[i, where] = cell_text_tokens(targets[i, where], tokenizer)
    return out


def print_gaps(right: np.ndarray, wrong: np.ndarray, rows: list[dict], loc0: int, what: str,
               tokenizer=None) -> None:
    """gap_by_kind over `rows` as a table: one line per token kind (with `tokenizer`: PubTabNet's cell
    words and markup too)."""
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    words = word_mask(batch, tokenizer) if tokenizer is not None else None
    print(f"{'tokens':<14} {'right':>7} {'shuffled':>9} {'gap':>7} {'count':>6}   (nats/token, {what})")
    for name, (r, w, gap, count) in gap_by_kind(right, wrong, batch, loc0, words).items():
        print(f"{name:<14} {r:7.3f} {w:9.3f} {gap:+7.3f} {count:6d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a nano checkpoint named <size>-<resolution>.npz, or "
                                           "random:<size>-<resolution>")
    parser.add_argument("--task", choices=LOC_TASKS, default="icdar15",
                        help="icdar15 (default) or pubtabnet, whose cells' boxes are loc tokens too")
    parser.add_argument("--train-data",
                        help="the task's folder in the release layout to train on (e.g. the pretraining "
                             "data's); needed when --steps > 0")
    parser.add_argument("--steps", type=int, default=600, help="training steps of batch 32 (default 600)")
    parser.add_argument("--lr", type=float, default=1e-3, help="the pretraining lr (default 1e-3)")
    parser.add_argument("--train-tower", action="store_true", help="train the image tower too")
    parser.add_argument("--loc-init", choices=("pretrained", "sinusoidal"), default="pretrained")
    parser.add_argument("--grid", default="configs/grids/demo.yaml",
                        help="grid whose text length and eval data are used (default: the demo)")
    parser.add_argument("--num-eval", type=int, default=160, help="eval examples scored (default 160)")
    parser.add_argument("--split", default="eval",
                        help="the grid data's split scored (default eval; the demo's train split is 300 "
                             "examples pretraining never saw: another seed)")
    args = parser.parse_args()
    if args.steps and not args.train_data:
        parser.error("--train-data is needed to train (or pass --steps 0)")

    name, path = parse_checkpoint(args.checkpoint)
    size, resolution = name.rsplit("-", 1)
    res = int(resolution)
    grid = load_grid(args.grid, check_files=False)
    prepare_demo_data(grid)
    task, config, tokenizer, spec = task_inputs(size, res, grid, args.task)
    eval_rows = [train_row(ex, ex.targets[0], tokenizer, spec) for _, ex in
                 zip(range(args.num_eval), task.examples(Path(grid.data_root) / args.task, args.split))]

    params = base_params(config_for(size, res), path, 0)
    loc0 = tokenizer.loc_id(0)
    if args.loc_init == "sinusoidal":
        table = np.array(params["llm"]["embedder"]["input_embedding"])
        norm = float(np.linalg.norm(table[:loc0], axis=1).mean())
        table[loc0:loc0 + NUM_LOC] = sinusoidal_rows(NUM_LOC, table.shape[1], norm)
        params["llm"]["embedder"]["input_embedding"] = table
    if args.steps:
        train_rows = [train_row(ex, ex.targets[0], tokenizer, spec)
                      for ex in task.examples(Path(args.train_data), "train")]
        rng = np.random.default_rng(0)
        batches = []
        for _ in range(args.steps):
            pick = rng.choice(len(train_rows), min(32, len(train_rows)), replace=False)
            batches.append({k: np.stack([train_rows[i][k] for i in pick]) for k in train_rows[0]})
        cfg = TrainConfig(lr=args.lr, num_steps=args.steps, freeze_img_tower=not args.train_tower)
        params, summary = train(config, params, batches, cfg, progress=None, desc=f"{args.task} {size}-{res}")
        print(f"trained {args.steps} steps on {len(train_rows)} scenes, final train loss "
              f"{summary['final_loss']:.3f}")

    nll = token_nll(PaliGemma(config))
    right, wrong = batched(nll, params, eval_rows), batched(nll, params, rolled(eval_rows))
    print_gaps(right, wrong, eval_rows, loc0, f"{len(eval_rows)} {args.task} {args.split} examples",
               tokenizer if args.task == "pubtabnet" else None)


if __name__ == "__main__":
    main()
