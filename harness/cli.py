"""`paligemma-transfer`: run a task grid, regenerate tables, list tasks, rescore predictions, print costs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_GRID = CONFIGS / "grids" / "demo.yaml"
DEFAULT_PRETRAIN = CONFIGS / "pretrain" / "nano.yaml"

DESCRIPTION = """\
Fine-tune PaliGemma 2 on transfer tasks over a task x size x resolution x learning-rate grid, score the
results with each task's official metric, and regenerate the paper's tables (arXiv 2412.03555).

With no arguments, `paligemma-transfer run` runs the embedded demo grid (a CPU-sized model family on
demo-scale data the project generates) end to end and prints the tables.
"""

EPILOG = """\
examples:
  paligemma-transfer run                                  # demo grid -> runs/demo, then tables
  paligemma-transfer run configs/grids/paper.yaml --dry-run   # list the paper's cells and their cost
  paligemma-transfer tables runs/demo                     # Markdown/CSV/LaTeX tables + PNG plots
  paligemma-transfer tasks --recipes                      # every plugin's size x resolution recipe
  paligemma-transfer score docvqa --data DIR --predictions preds.jsonl --json
  paligemma-transfer cost                                 # params and FLOPs vs the paper's Table 1
"""


def _enable_compile_cache() -> None:
    """Reuse compiled XLA programs across cells and runs: cells of one size and resolution share shapes,
    and on a CPU compiling a train step costs more than a hundred steps of a nano model."""
    import os

    import jax

    cache = Path(os.environ.get("PALIGEMMA_TRANSFER_CACHE", Path.home() / ".cache" / "paligemma-transfer"))
    jax.config.update("jax_compilation_cache_dir", str(cache / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _matmul_peak_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """This machine's float32 matmul rate now: the best of repeated jitted n x n `jnp.dot`s over about
    `seconds`. Printed with a run's time, so a timing can be read against how fast the machine was that
    day (2-core machines of the same type vary by a third from day to day)."""
    import time

    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()  # compile
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _cmd_run(args: argparse.Namespace) -> int:
    import time

    from harness.grid import load_grid
    from harness.scheduler import run_grid
    from results.tables import write_tables

    start = time.perf_counter()
    grid = load_grid(args.grid, check_files=not (args.dry_run or args.random_init))
    if args.random_init:
        grid = grid.random_init_twin()
    workdir = Path(args.workdir or Path("runs") / grid.name)
    if grid.demo:
        print(f"[demo scale] {grid.name}: tiny models on generated data; numbers show that the pipeline "
              "works and how the protocol behaves, not what PaliGemma 2 scores.", file=sys.stderr)
    _enable_compile_cache()
    run_grid(grid, workdir, backend=args.backend, dry_run=args.dry_run, progress=not args.quiet)
    if not args.dry_run:
        print(write_tables(workdir))
        elapsed = time.perf_counter() - start
        print(f"\ntables and plots written to {workdir / 'tables'}", file=sys.stderr)
        print(f"{grid.name}: {elapsed:.0f} s ({elapsed / 60:.1f} min); this machine's 2048² float32 jnp.dot "
              f"peak, measured now: {_matmul_peak_gflops():.0f} GFLOP/s", file=sys.stderr)
    return 0


def _cmd_tables(args: argparse.Namespace) -> int:
    from results.tables import write_tables

    print(write_tables(Path(args.workdir), Path(args.out) if args.out else None, baseline=args.baseline))
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from harness.task_listing import recipe_table, task_rows

    if args.recipes:
        rows = recipe_table(args.task)
        print(json.dumps(rows, indent=1) if args.json else _markdown(rows))
        return 0
    rows = task_rows()
    print(json.dumps(rows, indent=1) if args.json else _markdown(rows))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from harness.rescore import rescore

    scores = rescore(args.task, Path(args.data), Path(args.predictions), args.split)
    if args.json:
        print(json.dumps(scores.metrics))
    else:
        for key, value in scores.metrics.items():
            print(f"{key:>24s}  {value:.4f}")
        print(f"{'examples':>24s}  {scores.num_examples}")
        print(f"{'unparsable outputs':>24s}  {scores.num_unparsable}")
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    from model.cost import PRETRAIN_TEXT_LEN, cost_table, cost_table_json, format_cost_table

    table = cost_table(text_len=args.text_len or PRETRAIN_TEXT_LEN)
    print(json.dumps(cost_table_json(table), indent=1) if args.json else format_cost_table(table))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from harness.pretrain import load_spec, make_tokenizer, pretrain

    if args.tokenizer:
        from model.config import NANO_SP_VOCAB

        print(f"wrote {make_tokenizer(load_spec(args.config), NANO_SP_VOCAB)}")
        return 0
    _enable_compile_cache()
    for path in pretrain(args.config, tuple(args.sizes) if args.sizes else None,
                         max_resolution=args.max_resolution, progress=not args.quiet, out=args.out):
        print(path)
    return 0


def _markdown(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paligemma-transfer", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a grid (default: the demo grid), resumably, then write tables",
                       description="Run every cell of a grid file. Finished cells (those with a record in "
                       "WORKDIR/records) are never rerun; an interrupted cell resumes from its last "
                       "checkpoint; a lock keeps two schedulers from running one cell.")
    p.add_argument("grid", nargs="?", default=str(DEFAULT_GRID),
                   help="grid YAML (default: configs/grids/demo.yaml)")
    p.add_argument("--workdir", help="where records, predictions, checkpoints and tables go "
                   "(default: runs/<grid name>)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="run cells in this process (local) or spread them over a Ray cluster")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their estimated cost only")
    p.add_argument("--random-init", action="store_true",
                   help="run the grid's random-init twin instead (name + '-random', every cell from random "
                   "weights): the baseline for `tables WORKDIR --baseline runs/<name>-random`")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("tables", help="regenerate Markdown/CSV/LaTeX tables and PNG plots from records")
    p.add_argument("workdir", help="a grid's workdir (holds records/)")
    p.add_argument("--out", help="output folder (default: WORKDIR/tables)")
    p.add_argument("--baseline", metavar="WORKDIR", help="another grid's workdir to compare against cell by "
                   "cell (e.g. the random-init twin of the demo: runs/demo-random)")
    p.set_defaults(func=_cmd_tables)

    p = sub.add_parser("tasks", help="list the task plugins, or their recipes")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--recipes", action="store_true",
                   help="print the size x resolution recipe table (hold it against the paper)")
    p.add_argument("--task", help="with --recipes: only this task")
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("score", help="rescore saved predictions without a model",
                       description="Score a JSONL file of {\"id\": ..., \"prediction\": \"...\"} lines "
                       "against a split of the task's data. ids are the dataset's own ids.")
    p.add_argument("task", help="task name (see `paligemma-transfer tasks`)")
    p.add_argument("--data", required=True, help="the task's raw data folder (the TFDS manual dir)")
    p.add_argument("--predictions", required=True, help="predictions JSONL")
    p.add_argument("--split", default="eval", help="split role: train, minival, eval or test "
                   "(default: eval)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("cost", help="params and training FLOPs per example for the 3x3 family, "
                       "beside the paper's Table 1")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--text-len", type=int,
                   help="prefix+suffix tokens per example (default: the pretraining lengths, 128 at "
                   "224 px and 512 above, the setting Table 1 was measured in)")
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser("pretrain", help="pretrain the nano family (the demo's base checkpoints)",
                       description="Pretrain the nano family in stages like PaliGemma 2's (stage 1 at the "
                       "lowest resolution on a multitask mixture, stage 2 at the higher resolutions with "
                       "text-heavy tasks upweighted), on data the task generators make with their own seed. "
                       "Writes one .npz per size and resolution; rerunning keeps finished stages and "
                       "resumes the one in progress from its last checkpoint.")
    p.add_argument("config", nargs="?", default=str(DEFAULT_PRETRAIN), help="pretraining YAML "
                   "(default: configs/pretrain/nano.yaml)")
    p.add_argument("--sizes", nargs="+", help="only these sizes (default: the config's)")
    p.add_argument("--max-resolution", type=int, metavar="PX",
                   help="stop after the stages at or below this resolution (default: all stages)")
    p.add_argument("--out", metavar="DIR", help="write the checkpoints here instead of the config's `out` "
                   "(to build candidates without touching the shipped ones)")
    p.add_argument("--tokenizer", action="store_true",
                   help="only (re)train the nano SentencePiece tokenizer on the generated text")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "quiet", False):
        import os

        os.environ["TQDM_DISABLE"] = "1"  # also silences the bars of runners the scheduler calls
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"paligemma-transfer {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
