"""One ruff for everyone: the [test] extra, the pre-commit hook and .ci/run use the same pinned version,
and .ci/run lints before it tests."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _pinned_ruff() -> str:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    (pin,) = [req for req in extra if req.startswith("ruff")]
    return re.fullmatch(r"ruff==([\d.]+)", pin).group(1)


def test_pre_commit_hook_runs_the_pinned_ruff():
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    (repo,) = [r for r in config["repos"] if r["repo"].endswith("astral-sh/ruff-pre-commit")]
    assert repo["rev"] == "v" + _pinned_ruff()
    assert [hook["id"] for hook in repo["hooks"]] == ["ruff-check"]


def test_ci_lints_before_it_tests():
    script = (REPO / ".ci" / "run").read_text()
    assert script.index("ruff check .") < script.index("pytest")
