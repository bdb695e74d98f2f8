"""The memory plan (model/cost.py) beside XLA's own numbers for the real train step, on this machine's
default device. Compiles only (never runs a step), so a 3B step can be measured on any device.

    python -m bench.plan_vs_xla                                # the nano cases of docs/memory-plan.md
    python -m bench.plan_vs_xla 3b-224:64:16:bf16 3b-224:64:64:bf16   # the H200 cases of docs/memory-plan.md, on a GPU

A case is CONFIG:TEXT_LEN:BATCH with optional flags `remat` and `bf16` (bfloat16 compute). Prints a
Markdown table: XLA's peak (arguments + outputs - aliased + temporaries), the plan's total on one
device, and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

from harness.cell.xla_memory import train_step_memory
from model.config import get_config
from model.cost import memory_plan

NANO_CASES = ("nano-s-32:32:16", "nano-s-32:32:16:remat", "nano-m-64:64:8:bf16", "nano-l-128:32:8",
              "nano-l-128:32:16:remat:bf16")


def parse(case: str) -> tuple[str, int, int, bool, str]:
    parts = case.split(":")
    flags = set(parts[3:])
    if len(parts) < 3 or flags - {"remat", "bf16"}:
        raise SystemExit(f"case {case!r}: expected CONFIG:TEXT_LEN:BATCH[:remat][:bf16]")
    return parts[0], int(parts[1]), int(parts[2]), "remat" in flags, "bfloat16" if "bf16" in flags else "float32"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=list(NANO_CASES))
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}\n")
    print("| config | text_len | batch | remat | compute | XLA (GiB) | plan (GiB) | plan / XLA | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        name, text_len, batch, remat, dtype = parse(case)
        config = get_config(name)
        start = time.perf_counter()
        xla = train_step_memory(config, text_len=text_len, batch_size=batch, remat=remat, compute_dtype=dtype)
        seconds = time.perf_counter() - start
        plan = memory_plan(config, text_len, batch, "h100", 1, remat=remat, compute_dtype=dtype)
        print(f"| {name} | {text_len} | {batch} | {'yes' if remat else 'no'} | {dtype} | "
              f"{xla.total_bytes / 2**30:.3f} | {plan.bytes_per_device / 2**30:.3f} | "
              f"{plan.bytes_per_device / xla.total_bytes:.2f} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
