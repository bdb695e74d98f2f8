"""The demo generators write the same bytes in every process (same seed), whatever PYTHONHASHSEED is.

A generator that iterates over a set of strings depends on the per-process hash seed, which silently
changes the demo data, and so the demo's numbers, from one run to the next.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.registry import BUILTIN

ROOT = Path(__file__).resolve().parents[1]

WRITE = """
import sys
from tasks.registry import get_task
get_task(sys.argv[1]).write_demo(sys.argv[2], num_train=6, num_eval=4, seed=3)
"""


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task", sorted(BUILTIN))
def test_demo_data_is_the_same_under_any_hash_seed(task: str, tmp_path: Path) -> None:
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", WRITE, task, str(out)], cwd=ROOT, env=env, check=True)
        digests.append(_digest(out))
    assert digests[0] and digests[0] == digests[1]
