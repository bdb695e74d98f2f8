"""Run a script on N fake CPU devices: XLA reads --xla_force_host_platform_device_count once per process,
so a test that needs a multi-device mesh runs its script in a fresh interpreter and reads back the JSON
object the script prints as its last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_on_fake_devices(script: str, devices: int, *, timeout: int) -> dict:
    """`python -c script` from the repository root on `devices` CPU devices; its last stdout line, parsed."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
