"""Where a record's number came from: the project's version and git commit, and the device it ran on."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the code runs from; (None, None) outside a git checkout."""
    if not (REPO / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def device_info() -> dict[str, Any]:
    """The accelerator JAX used in this process; None when the runner never imported JAX."""
    if "jax" not in sys.modules:
        return {"device_kind": None, "num_devices": None}
    import jax

    devices = jax.devices()
    return {"device_kind": f"{devices[0].platform}:{devices[0].device_kind}", "num_devices": len(devices)}


def provenance(device: dict[str, Any] | None = None) -> dict[str, Any]:
    from harness.run.grid import project_version

    commit, dirty = git_state()
    return {"project_version": project_version(), "git_commit": commit, "git_dirty": dirty,
            **(device if device is not None else device_info())}
