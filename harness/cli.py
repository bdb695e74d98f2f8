"""`paligemma-transfer`: run a task grid, regenerate tables, list tasks, rescore predictions, print costs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

DEFAULT_GRID = "demo"  # a shipped grid's name (harness/shipped.py)
DEFAULT_PRETRAIN = "configs/pretrain/nano.yaml"

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
  paligemma-transfer cost --plan --device tpu-v5e --batch 256 --text-len 32   # memory per device, meshes
"""


def _enable_compile_cache() -> None:
    """Reuse compiled XLA programs across cells and runs: cells of one size and resolution share shapes,
    and on a CPU compiling a train step costs more than a hundred steps of a nano model."""
    import jax

    from tasks.prepared import cache_root

    cache = cache_root()  # $PALIGEMMA_TRANSFER_CACHE, else $XDG_CACHE_HOME/paligemma-transfer
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

    from harness.run import multihost
    from harness.run.grid import load_grid
    from harness.run.scheduler import run_grid
    from harness.run.workdir import read_grid_cells
    from model.sharding import initialize_distributed
    from results.paths import as_path
    from results.tables import write_tables

    if not args.dry_run:
        initialize_distributed()  # a multi-host job (docs/scale.md): before anything touches a device

    start = time.perf_counter()
    from harness.shipped import grid_path

    grid = load_grid(grid_path(args.grid), check_files=not (args.dry_run or args.random_init))
    if args.random_init:
        grid = grid.random_init_twin()
    if args.log is not None:
        from dataclasses import replace

        from harness.cell.experiment_log import check_names

        grid = replace(grid, logging=check_names([n for n in args.log if n != "none"]))
    workdir = as_path(args.workdir) if args.workdir else Path("runs") / grid.name  # a folder or gs://...
    if grid.demo:
        print(f"[demo scale] {grid.name}: tiny models on generated data; numbers show that the pipeline "
              "works and how the protocol behaves, not what PaliGemma 2 scores.", file=sys.stderr)
    _enable_compile_cache()
    run_grid(grid, workdir, backend=args.backend, dry_run=args.dry_run, progress=not args.quiet,
             cache_dir=args.cache_dir)
    if not args.dry_run and multihost.is_primary():
        print(write_tables(workdir, cell_ids=read_grid_cells(workdir)))
        elapsed = time.perf_counter() - start
        print(f"\ntables and plots written to {workdir / 'tables'}", file=sys.stderr)
        print(f"{grid.name}: {elapsed:.0f} s ({elapsed / 60:.1f} min); this machine's 2048² float32 jnp.dot "
              f"peak, measured now: {_matmul_peak_gflops():.0f} GFLOP/s", file=sys.stderr)
    return 0


def eval_grid_text(args: argparse.Namespace) -> str:
    """The eval-only grid `paligemma-transfer eval` runs: the checkpoint scored as it is on each task."""
    import yaml

    name = args.name or f"eval-{Path(args.checkpoint.rstrip('/')).stem.replace('.', '-')}"
    grid = {"name": name, "train": False, "tasks": list(args.task), "sizes": [args.size],
            "resolutions": [args.resolution], "protocol": {"final": {"split": args.split}},
            "data_root": args.data_root, "checkpoints": args.checkpoint}
    overrides = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.override or [])}
    if args.tokenizer:
        overrides["tokenizer"] = args.tokenizer
    if overrides:
        grid["overrides"] = {"all": overrides}
    header = "# Written by `paligemma-transfer eval`: an eval-only grid (configs/grids/paper.yaml explains it).\n"
    return header + yaml.safe_dump(grid, sort_keys=False)


def _cmd_eval(args: argparse.Namespace) -> int:
    """Score a checkpoint without fine-tuning: writes an eval-only grid into the workdir and runs it."""
    for o in args.override or []:
        if "=" not in o:
            raise ValueError(f"--override {o!r}: expected KEY=VALUE")
    text = eval_grid_text(args)
    import yaml

    from results.paths import as_path
    from results.store import atomic_write_text

    name = yaml.safe_load(text)["name"]
    workdir = as_path(args.workdir) if args.workdir else Path("runs") / name
    grid_path = workdir / "eval-grid.yaml"
    atomic_write_text(grid_path, text)
    run_args = argparse.Namespace(grid=str(grid_path), workdir=str(workdir), dry_run=args.dry_run,
                                  random_init=False, log=None, backend="local", quiet=args.quiet,
                                  cache_dir=args.cache_dir)
    return _cmd_run(run_args)


def _cmd_tables(args: argparse.Namespace) -> int:
    """The tables of the grid last run in the workdir (its grid_cells.json); a workdir without one (from an
    older version) is tabled from every record, newest first, and says so."""
    from harness.run.workdir import read_grid_cells
    from results.paths import as_path
    from results.tables import write_tables

    workdir = as_path(args.workdir)  # a folder or a bucket URL (gs://bucket/run), as `run --workdir` takes
    baseline = as_path(args.baseline) if args.baseline else None
    print(write_tables(workdir, as_path(args.out) if args.out else None, baseline=baseline,
                       cell_ids=read_grid_cells(workdir),
                       baseline_cell_ids=read_grid_cells(baseline) if baseline else None))
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from harness.task_listing import recipe_table, task_rows
    from results.tabular import markdown_rows

    if args.recipes:
        rows = recipe_table(args.task)
        print(json.dumps(rows, indent=1) if args.json else markdown_rows(rows), file=args.stdout)
        return 0
    rows = task_rows()
    print(json.dumps(rows, indent=1) if args.json else markdown_rows(rows), file=args.stdout)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from harness.rescore import rescore

    result = rescore(args.task, Path(args.data), Path(args.predictions), args.split,
                     cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    scores = result.scores
    print(result.summary(args.task, args.split), file=sys.stderr)
    if args.json:
        print(json.dumps(scores.metrics), file=args.stdout)
    else:
        for key, value in scores.metrics.items():
            print(f"{key:>24s}  {value:.4f}")
        print(f"{'examples':>24s}  {scores.num_examples}")
        print(f"{'predictions matched':>24s}  {result.num_predictions}")
        print(f"{'without a prediction':>24s}  {result.missing}")
        print(f"{'unparsable outputs':>24s}  {scores.num_unparsable}")
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    from model.cost import PRETRAIN_TEXT_LEN, cost_table, cost_table_json, format_cost_table

    if args.plan:
        return _cost_plan(args, args.text_len or PRETRAIN_TEXT_LEN)
    table = cost_table(text_len=args.text_len or PRETRAIN_TEXT_LEN)
    print(json.dumps(cost_table_json(table), indent=1) if args.json else format_cost_table(table),
          file=args.stdout)
    return 0


def _cost_plan(args: argparse.Namespace, text_len) -> int:
    from model.config import config_for, get_config
    from model.cost import format_plan_table, plan_table, plan_table_json

    if args.device is None or args.batch is None:
        raise ValueError("cost --plan needs --device and --batch")
    configs = ([get_config(name) for name in args.configs] if args.configs else
               [config_for(s, r) for s in ("3b", "10b", "28b") for r in (224, 448, 896)])
    table = plan_table(configs, text_len=text_len, batch_size=args.batch, device=args.device,
                       devices=args.devices, remat=args.remat, compute_dtype=args.compute_dtype)
    print(json.dumps(plan_table_json(table), indent=1) if args.json else format_plan_table(table),
          file=args.stdout)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from harness.pretrain.stages import load_spec, make_tokenizer, pretrain
    from harness.shipped import shipped

    if not Path(args.config).exists() and shipped(args.config) is not None:
        args.config = str(shipped(args.config))

    if args.tokenizer:
        from model.config import NANO_SP_VOCAB

        print(f"wrote {make_tokenizer(load_spec(args.config), NANO_SP_VOCAB)}")
        return 0
    _enable_compile_cache()
    mesh = None
    if args.model_parallel is not None:
        from model.sharding import mesh_from_axes

        mesh = mesh_from_axes(model=args.model_parallel)
    for path in pretrain(args.config, tuple(args.sizes) if args.sizes else None,
                         max_resolution=args.max_resolution, progress=not args.quiet, mesh=mesh,
                         out=args.out):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paligemma-transfer", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a grid (default: the demo grid), resumably, then write tables",
                       description="Run every cell of a grid file. Finished cells (those with a record in "
                       "WORKDIR/records) are never rerun; an interrupted cell resumes from its last "
                       "checkpoint; a lock keeps two schedulers from running one cell.")
    p.add_argument("grid", nargs="?", default=DEFAULT_GRID,
                   help="grid YAML (default: configs/grids/demo.yaml)")
    p.add_argument("--workdir", help="where records, predictions, checkpoints and tables go: a folder or a "
                   "bucket URL such as gs://bucket/run (default: runs/<grid name>)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="run cells in this process (local) or spread them over a Ray cluster")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their estimated cost only")
    p.add_argument("--random-init", action="store_true",
                   help="run the grid's random-init twin instead (name + '-random', every cell from random "
                   "weights): the baseline for `tables WORKDIR --baseline runs/<name>-random`")
    p.add_argument("--log", action="append", metavar="WRITER", choices=("csv", "tensorboard", "wandb", "none"),
                   help="experiment log of every cell, repeatable: csv, tensorboard, wandb (the [wandb] extra) "
                   "or none; replaces the grid's `logging` (default: csv and tensorboard, under "
                   "WORKDIR/cells/<cell id>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--cache-dir", help="where prepared data goes, keyed on the raw files' content (default: "
                   "the cache `run`, `eval` and `score` share, ~/.cache/paligemma-transfer/data)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("tables", help="regenerate Markdown/CSV/LaTeX tables and PNG plots from records")
    p.add_argument("workdir", help="a grid's workdir (holds records/): a folder or a bucket URL")
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

    p = sub.add_parser("eval", help="score a checkpoint on tasks without fine-tuning (an eval-only grid)",
                       description="Decode and score a checkpoint as it is (a released -ft- or -mix- checkpoint, "
                       "or one's own) on each task; records say trained: false. The grid it runs is written to "
                       "WORKDIR/eval-grid.yaml.")
    p.add_argument("checkpoint", help="a .npz / safetensors path, a transformers folder or hf://org/name")
    p.add_argument("--task", action="append", required=True, help="task name (repeat for several)")
    p.add_argument("--size", required=True, help="the checkpoint's size: 3b 10b 28b, or nano-s nano-m nano-l")
    p.add_argument("--resolution", type=int, required=True, help="the checkpoint's resolution")
    p.add_argument("--data-root", default="data", help="the tasks' raw data folders are DATA_ROOT/<task>")
    p.add_argument("--split", default="eval", help="split role to score (default: eval)")
    p.add_argument("--tokenizer", help="the Gemma tokenizer file (not needed for nano or hf:// checkpoints)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="a recipe field or harness option, e.g. max_eval_examples=100 (repeatable)")
    p.add_argument("--name", help="the grid's name (default: eval-<checkpoint file name>)")
    p.add_argument("--workdir", help="default: runs/<name>")
    p.add_argument("--cache-dir", help="where prepared data goes (default: the shared cache)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("score", help="rescore saved predictions without a model",
                       description="Score a JSONL file of {\"id\": ..., \"prediction\": \"...\"} lines "
                       "against a split of the task's data. ids are the dataset's own ids.")
    p.add_argument("task", help="task name (see `paligemma-transfer tasks`)")
    p.add_argument("--data", required=True, help="the task's raw data folder (the TFDS manual dir)")
    p.add_argument("--predictions", required=True, help="predictions JSONL")
    p.add_argument("--split", default="eval", help="split role: train, minival, eval or test "
                   "(default: eval)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--cache-dir", help="where prepared data goes, keyed on the raw files' content (default: "
                   "$XDG_CACHE_HOME/paligemma-transfer/data, i.e. ~/.cache/paligemma-transfer/data, shared with run)")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("cost", help="params and training FLOPs per example for the 3x3 family, "
                       "beside the paper's Table 1")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--text-len", type=int,
                   help="prefix+suffix tokens per example (default: the pretraining lengths, 128 at "
                   "224 px and 512 above, the setting Table 1 was measured in)")
    p.add_argument("--plan", action="store_true", help="print the training memory plan instead: bytes per "
                   "device of params, grads, Adam state and activations, the smallest mesh that fits and the "
                   "mesh `auto` picks (docs/memory-plan.md)")
    from model.cost import PLAN_DEVICES

    p.add_argument("--device", choices=PLAN_DEVICES, help="with --plan: the accelerator")
    p.add_argument("--batch", type=int, help="with --plan: the global batch size")
    p.add_argument("--devices", type=int, default=8, help="with --plan: how many devices `auto` may use "
                   "(default: 8, one host)")
    p.add_argument("--remat", action="store_true", help="with --plan: recompute each layer in the backward "
                   "pass (the remat override) instead of keeping its matmul outputs")
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="with --plan: the compute_dtype override (params and Adam stay float32)")
    p.add_argument("--configs", nargs="+", metavar="CONFIG", help="with --plan: only these configs "
                   "(default: 3b/10b/28b x 224/448/896)")
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
    p.add_argument("--model-parallel", type=int, metavar="M",
                   help="train sharded over every local device: a (devices/M, M) data x model mesh "
                   "(default: one device)")
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
        os.environ["TQDM_DISABLE"] = "1"  # also silences the bars of runners the scheduler calls
    from tasks.quiet import quiet_environment

    quiet_environment()
    # With --json, stdout holds exactly one JSON document: anything else printed (a library's notice,
    # a progress line) goes to stderr, and the command prints its document to `args.stdout`.
    args.stdout = sys.stdout
    reserve = contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext()
    try:
        with reserve:
            return args.func(args)
    except BrokenPipeError:
        # `tasks --recipes | head`: the reader has what it wanted; no traceback, and nothing more to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (KeyError, ValueError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"paligemma-transfer {args.command}: error: {message}", file=sys.stderr)
        return _end_job(2)
    except (RuntimeError, OSError) as e:
        # Failed cells (RunError; tracebacks in cells/<id>/error.txt) or the system refusing (no space
        # left, permissions): one line and a non-zero exit, never a traceback. Other errors are bugs.
        if isinstance(e, RuntimeError) and type(e).__name__ != "RunError":
            _end_job_after_traceback()
            raise
        message = " ".join(str(e).split())
        print(f"paligemma-transfer {args.command}: error: {type(e).__name__}: {message}", file=sys.stderr)
        return _end_job(1)
    except KeyboardInterrupt:
        print(f"paligemma-transfer {args.command}: interrupted; run the same command again to resume "
              "(finished cells are kept; a cell resumes from its last checkpoint)", file=sys.stderr)
        return _end_job(130)
    except Exception:
        _end_job_after_traceback()
        raise


def _in_multihost_job() -> bool:
    if "jax" not in sys.modules:
        return False
    from harness.run import multihost

    return multihost.multi_host()


def _end_job(code: int) -> int:
    """`code`, or in a multi-host job the end of this process with it, now: a normal exit would wait in
    jax.distributed's shutdown for processes that are still inside a cell, and they must see this one
    leave (their collectives with it fail, its heartbeats stop) to end too (docs/scale.md)."""
    if code and _in_multihost_job():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _end_job_after_traceback() -> None:
    """A bug in a multi-host job: its traceback, then this process ends (no other waits on it)."""
    if _in_multihost_job():
        import traceback

        traceback.print_exc()
        _end_job(1)


if __name__ == "__main__":
    sys.exit(main())
