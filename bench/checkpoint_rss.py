"""Peak host memory of loading a base checkpoint: every host whole, against each host its own shards.

Writes a synthetic base checkpoint (the nano architecture widened to a 1024-wide, 8192-MLP language model,
float32, about --mb megabytes) in each format, a big_vision .npz and a Hugging Face directory (written by
transformers' save_pretrained, split over several safetensors files), and measures the peak RSS of
  whole:   one process, checkpoint.load + placing it on its device (what every host did before), and
  sharded: each of 2 CPU processes (jax.distributed on localhost, one device each) running
           checkpoint.load_sharded onto a (2, 1) mesh, so each reads only its half.
Prints one JSON line per format: the peaks in MB, each process's growth over its RSS before loading,
the ratio of a sharded process's peak to the whole one's (the growth ratio beside it), and a sharded
process's growth as a fraction of the checkpoint's size: its share, 0.5, plus what is in flight (on CPU
the devices are host memory, so a parameter's slice is held twice while it is placed, and an HF read
adds one layer's source tensors).

    python bench/checkpoint_rss.py [--mb 1024] [--format npz hf]
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LAYER_MB = 113  # float32 bytes of one widened LLM layer, in MB (10^6)


def bench_config(depth: int):
    """nano-s-32 with a language model wide enough that `depth` layers weigh ~113 MB each."""
    from model.config import get_config

    base = get_config("nano-s-32")
    llm = dataclasses.replace(base.llm, width=1024, mlp_dim=8192, num_heads=8, num_kv_heads=4, head_dim=128,
                              depth=depth, query_pre_attn_scalar=128)
    return base.replace(name=f"rss-bench-{depth}", llm=llm)


def write_checkpoint(path: str, depth: int) -> int:
    """Random float32 params of bench_config(depth) in the big_vision .npz layout; returns its bytes."""
    import jax
    import numpy as np

    from model import checkpoint
    from model.paligemma import param_shapes

    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, dtype=np.float32),
                          param_shapes(bench_config(depth)))
    checkpoint.save_npz(path, params)
    return os.path.getsize(path)


def write_hf_checkpoint(path: str, depth: int) -> int:
    """Random float32 weights of bench_config(depth) as transformers saves them (model.testing's twin
    of the config), in files of at most a quarter of the model each, so the per-host reader meets an
    index json and several files; returns the bytes of the safetensors files."""
    from model.testing import random_hf_model

    model = random_hf_model(bench_config(depth))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(path, max_shard_size=size // 4 + 1)
    del model
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*.safetensors")))


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e3  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def reset_peak() -> None:
    """Start VmHWM over from the current RSS (Linux: writing 5 to clear_refs), so jax's own start-up
    peak does not hide the load's."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def worker(mode: str, path: str, depth: int) -> None:
    """One measured load; prints {"before": MB, "peak": MB}: the RSS once jax has started, and the peak
    RSS during the load (VmHWM, reset just before it)."""
    import jax
    import numpy as np

    from model import checkpoint
    from model.paligemma import param_shapes
    from model.sharding import initialize_distributed, make_mesh, param_shardings, place

    config = bench_config(depth)
    if mode == "sharded":
        assert initialize_distributed()
    mesh = make_mesh(1)  # (devices, 1): one device here, both processes' devices when sharded
    shardings = param_shardings(param_shapes(config), mesh)
    jax.block_until_ready(jax.device_put(np.zeros(4), jax.devices()[0]))
    reset_peak()
    before = _status_mb("VmRSS")
    if mode == "whole":  # An HF directory carries its config, an .npz is told it.
        config_name = None if os.path.isdir(path) else config
        _, params = checkpoint.load(path, config_name=config_name, dtype=np.float32)
        params = place(params, shardings)
    else:
        params = checkpoint.load_sharded(path, config, shardings, np.float32)
    jax.block_until_ready(params)
    print(json.dumps({"mode": mode, "process": jax.process_index(), "before": before, "peak": peak_mb(),
                      "devices": jax.device_count()}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(mode: str, path: str, depth: int, processes: int, timeout: int) -> list[dict]:
    port = _free_port()
    procs = []
    for i in range(processes):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
        if processes > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                       JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", mode, "--path", path,
                                       "--depth", str(depth)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode:
                raise RuntimeError(f"{mode} worker failed: {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def measure(mb: int, fmt: str = "npz", timeout: int = 900) -> dict:
    """The whole and the sharded load of a ~`mb` MB checkpoint in format `fmt` ('npz': big_vision,
    'hf': a Hugging Face directory); see the module docstring."""
    depth = max(1, round(mb / LAYER_MB))
    with tempfile.TemporaryDirectory() as tmp:
        if fmt == "npz":
            path = str(Path(tmp) / "base.npz")
            size = write_checkpoint(path, depth)
        else:
            path = str(Path(tmp) / "base-hf")
            size = write_hf_checkpoint(path, depth)
        whole = _run("whole", path, depth, 1, timeout)[0]
        sharded = _run("sharded", path, depth, 2, timeout)
    worst = max(sharded, key=lambda r: r["peak"])
    grow = lambda r: r["peak"] - r["before"]
    return {"format": fmt, "checkpoint_mb": round(size / 1e6), "whole_peak_mb": round(whole["peak"]),
            "whole_growth_mb": round(grow(whole)),
            "sharded_peak_mb": [round(r["peak"]) for r in sharded],
            "sharded_growth_mb": [round(grow(r)) for r in sharded],
            "peak_ratio": round(worst["peak"] / whole["peak"], 3),
            "growth_ratio": round(grow(worst) / grow(whole), 3),
            "sharded_growth_of_checkpoint": round(grow(worst) / (size / 1e6), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="checkpoint size to write, MB (default 1024)")
    parser.add_argument("--format", nargs="+", choices=["npz", "hf"], default=["npz", "hf"],
                        help="checkpoint formats to measure, a line each (default both)")
    parser.add_argument("--worker", choices=["whole", "sharded"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.path, args.depth)
        return 0
    for fmt in args.format:
        print(json.dumps(measure(args.mb, fmt)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
