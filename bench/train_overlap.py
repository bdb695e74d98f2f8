"""The training loop with a slow loader: steps/s of a nano cell when every batch takes 50 ms to load, with the
trainer's overlap (harness/cell/train.py: grain reads ahead, the next batch goes onto the device while the
step runs, the stats are read two steps late) and without it (the loop indexes batches[step], then steps,
then reads the loss: load and step add up).

    python -m bench.train_overlap                  # nano-s-32, batch 2, 50 ms per batch, 40 steps
    python -m bench.train_overlap --batch 8 --text-len 32   # a step longer than the load

Both sides run the same jitted step (make_train_step on the same mesh and state) on the same batches;
steps/s is measured over the steps after the first STEADY_FROM (compilation and the first reads left out).
Results: docs/data-pipeline.md.
"""

from __future__ import annotations

import argparse
import time

import grain
import jax
import numpy as np

from harness.cell.train import StateShardings, TrainConfig, build_model, make_optimizer, make_train_step, train
from model import sharding
from model.config import get_config
from model.paligemma import init_params

STEADY_FROM = 5


class SlowBatch:
    """Batch `step` of a fixed set, after `delay` seconds: a loader that decodes for that long."""

    def __init__(self, batches: list[dict], delay: float):
        self.batches, self.delay = batches, delay

    def __call__(self, step: int) -> dict:
        time.sleep(self.delay)
        return self.batches[int(step) % len(self.batches)]


def random_batches(config, batch_size: int, text_len: int, count: int = 4) -> list[dict]:
    """Host batches as the pipeline makes them: uint8 images, half prefix and half suffix tokens."""
    rng = np.random.default_rng(0)
    res, half = config.resolution, text_len // 2
    mask_ar = np.tile(np.array([0] * half + [1] * (text_len - half), np.int32), (batch_size, 1))
    return [dict(image=rng.integers(0, 256, (batch_size, res, res, 3), dtype=np.uint8),
                 text=rng.integers(3, config.llm.vocab_size, (batch_size, text_len)).astype(np.int32),
                 mask_ar=mask_ar, mask_loss=mask_ar, mask_input=np.ones((batch_size, text_len), np.int32))
            for _ in range(count)]


class StepTimes:
    """An experiment log that notes when each step's stats arrive."""

    def __init__(self):
        self.times: dict[int, float] = {}

    def scalars(self, step: int, values) -> None:
        self.times.setdefault(step, time.perf_counter())

    def close(self) -> None:
        pass


def steady_rate(times: dict[int, float]) -> float:
    """Steps per second from step STEADY_FROM to the last."""
    last = max(times)
    return (last - STEADY_FROM) / (times[last] - times[STEADY_FROM])


def overlapped(config, params, loader: grain.MapDataset, cfg: TrainConfig) -> float:
    log = StepTimes()
    train(config, params, loader, cfg, progress=False, metrics_log=log)
    return steady_rate(log.times)


def sequential(config, params, loader: grain.MapDataset, cfg: TrainConfig) -> float:
    """The loop without overlap: load batch `step`, put it on the device, step, read the loss."""
    mesh = sharding.local_mesh()
    tx = make_optimizer(params, cfg)
    shards = StateShardings.build(mesh, params, tx)
    params = sharding.place(params, shards.params)
    opt_state = jax.jit(tx.init, out_shardings=shards.opt_state)(params)
    step_fn = make_train_step(build_model(config, cfg), tx, cfg.label_smoothing, shards, cfg.loss_impl)
    rng = jax.random.key(cfg.seed)
    times = {}
    for step in range(cfg.num_steps):
        batch = sharding.put_batch(loader[step], shards.batch)
        params, opt_state, stats = step_fn(params, opt_state, batch, jax.random.fold_in(rng, step))
        float(stats["loss"]), float(stats["grad_norm"])
        times[step + 1] = time.perf_counter()
    return steady_rate(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="nano-s-32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    config = get_config(args.config)
    cfg = TrainConfig(lr=1e-4, num_steps=args.steps, seed=0)
    host = jax.tree_util.tree_map(np.asarray, init_params(config, jax.random.key(0)))
    batches = random_batches(config, args.batch, args.text_len)
    loader = grain.MapDataset.range(args.steps).map(SlowBatch(batches, args.delay_ms / 1000))
    free = grain.MapDataset.range(args.steps).map(SlowBatch(batches, 0.0))
    rates = {
        "step alone (no load time)": sequential(config, host, free, cfg),
        "without overlap": sequential(config, host, loader, cfg),
        "with overlap": overlapped(config, host, loader, cfg),
    }
    print(f"{args.config}, batch {args.batch}, text {args.text_len}, {args.delay_ms:.0f} ms per batch, "
          f"{args.steps} steps on {jax.devices()[0].device_kind}")
    print("| loop | steps/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} |")
    print(f"overlap / without: {rates['with overlap'] / rates['without overlap']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
