"""The repository describes the project as it is: no file speaks of the steps of the work that built it
(numbered steps of the work, its sittings, tracker numbers, which day ran fast). A reader cannot see any of that,
so a sentence that needs it says nothing to them.

The check is one `git grep` over every file git would commit (tracked, and untracked but not ignored),
README.md included; the pattern is assembled from pieces so that this file does not match it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    r"\bstops? [0-9]+\b",  # a numbered step of the work
    r"\bsess" + r"ions?\b",
    r"\biss" + r"ues? #?[0-9]+\b",
    r"\bthe iss" + r"ue\b",
    r"no GPU " + r"was",
    r"(fast|slow|slower|quiet) d" + r"ay\b",
]
PATTERN = "|".join(WORDS)


def _git_grep(pattern: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "grep", "--untracked", "-nIiE", pattern], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def git_tree() -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return REPO


def test_no_file_speaks_of_how_the_project_was_built(git_tree):
    done = _git_grep(PATTERN, git_tree)
    assert done.returncode in (0, 1), done.stderr  # 1: no match
    hits = done.stdout.splitlines()
    assert not hits, f"{len(hits)} lines speak of the work, not the project:\n" + "\n".join(hits[:40])


def test_the_pattern_catches_each_kind_of_word(tmp_path):
    """Each piece of the pattern matches what it is for and leaves ordinary prose alone."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    caught = ["measured in st" + "op 21", "the last sess" + "ion", "see iss" + "ue #12", "since the iss" + "ue",
              "no GPU " + "was lent", "on a slow d" + "ay"]
    kept = ["stops at 21 steps", "the issuer", "a fast path", "days of data"]
    (tmp_path / "notes.txt").write_text("\n".join(caught + kept) + "\n")
    hits = [line.split(":", 2)[2] for line in _git_grep(PATTERN, tmp_path).stdout.splitlines()]
    assert hits == caught
