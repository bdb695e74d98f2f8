"""Start the same command as both processes of a 2-process JAX job on this machine (jax.distributed over
localhost, each process with its own fake CPU devices), as a multi-host job runs it on every host."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(command: Sequence[str], logs: Path, *, devices: int, timeout: float,
            env: Mapping[str, str] | None = None, per_process: Mapping[str, str] | None = None) -> list[int]:
    """Run `command` as processes 0 and 1 (stdout to logs/out{i}, stderr to logs/err{i}); their exit codes.

    `per_process`: variables whose value gets the process index appended (e.g. a cache folder each)."""
    port, procs = free_port(), []
    for i in range(2):
        own = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(i), **(env or {}),
                   **{k: f"{v}{i}" for k, v in (per_process or {}).items()})
        with open(logs / f"out{i}", "w") as out, open(logs / f"err{i}", "w") as err:
            procs.append(subprocess.Popen(list(command), cwd=ROOT, env=own, stdout=out, stderr=err))
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
