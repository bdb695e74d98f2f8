"""`pip install .` (not editable) works from any directory: the CLI finds the shipped grids by name or by
their configs/ path, the demo's nano checkpoints and the tokenizer in the installed copy, never in the
source tree; a `metrics` module in the working directory does not shadow the project's."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding a non-editable install of the project; its dependencies are this test run's
    (a .pth file), so nothing is downloaded."""
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next((venv / "lib").glob("python3*/site-packages"))
    (packages / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    source = root / "src"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", str(source)], check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)
    return venv


def _cli(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run([str(venv / "bin" / "paligemma-transfer"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def test_the_installed_cli_works_from_another_directory(installed, tmp_path):
    (tmp_path / "metrics.py").write_text("raise ImportError('a user module named metrics')\n")
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import harness, metrics; "
                            "print(harness.__file__); print(metrics.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    # `python -c` puts the working directory first on sys.path: there the user's module wins, as any
    # module would; the console script does not (its sys.path starts at the venv's bin folder).
    assert "a user module named metrics" in where.stderr
    tasks = _cli(installed, tmp_path, "tasks")
    assert tasks.returncode == 0 and "vqav2" in tasks.stdout, tasks.stderr
    assert _cli(installed, tmp_path, "cost").returncode == 0
    for grid in ("demo", "demo-seeds", "configs/grids/paper.yaml"):
        plan = _cli(installed, tmp_path, "run", grid, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "does not exist" not in plan.stderr or grid.endswith("paper.yaml"), plan.stderr
    listing = subprocess.run([str(installed / "bin" / "python"), "-c", "import harness.shipped as s; "
                              "print(s.shipped('configs/grids/demo.yaml')); print(s.SOURCE_ROOT)"],
                             cwd=REPO.parent, capture_output=True, text=True, timeout=120)
    shipped_at, source_root = listing.stdout.split()
    assert str(installed) in shipped_at and str(REPO) not in source_root, listing.stdout
