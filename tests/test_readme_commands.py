"""Every `paligemma-transfer` command the README shows runs as written, with its placeholders (my_grid.yaml,
ckpt.npz, data/docvqa, preds.jsonl, runs/demo) filled by small stand-ins; those that train a model run in
the slow suite, and the paper's full grid (it needs the released checkpoints) only as its dry run."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
FAST = {
    "paligemma-transfer run configs/grids/paper.yaml --dry-run",
    "paligemma-transfer run my_grid.yaml",
    "paligemma-transfer tables runs/demo",
    "paligemma-transfer tables runs/demo --baseline runs/demo-random",
    "paligemma-transfer score docvqa --data data/docvqa --predictions preds.jsonl --json",
    "paligemma-transfer cost --plan --device tpu-v5e --batch 256",
    "paligemma-transfer tasks",
}
SLOW = {  # they fine-tune or decode a model, or start a Ray cluster
    "paligemma-transfer run",
    "paligemma-transfer run demo-seeds",
    "paligemma-transfer run --random-init",
    "paligemma-transfer run my_grid.yaml --backend ray",
    "paligemma-transfer eval ckpt.npz --task docvqa --size 3b --resolution 448 --tokenizer tok.model",
}
NOT_ON_A_CPU = {"paligemma-transfer run configs/grids/paper.yaml"}  # the released 3B-28B checkpoints

MY_GRID = """\
name: demo
demo: {num_train: 4, num_eval: 3, seed: 0}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32, 64]
lrs: [1.0e-3]
data_root: data
checkpoints: random
runner: tests.helpers.fake_runner:run
"""


def readme_commands() -> set[str]:
    """Every command line of the README's bash blocks and inline code, comments and the venv prefix cut."""
    found = set()
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            command = line.split("#")[0].strip()
            command = command.split("&& .venv/bin/")[-1] if "&& .venv/bin/" in command else command
            if command.startswith("paligemma-transfer"):
                found.add(command)
    found |= {m.strip() for m in re.findall(r"`(paligemma-transfer [^`]*)`", README)}
    return found


def test_every_readme_command_has_a_test():
    assert readme_commands() == FAST | SLOW | NOT_ON_A_CPU


@pytest.fixture
def standins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PALIGEMMA_TRANSFER_MEMORY_CHECK", "0")
    (tmp_path / "my_grid.yaml").write_text(MY_GRID)
    get_task("docvqa").write_demo(tmp_path / "data" / "docvqa", num_train=4, num_eval=3, seed=0)
    return tmp_path


def _run(command: str) -> int:
    args = shlex.split(command)[1:]
    return main([*args, "--quiet"] if args and args[0] == "run" and "--dry-run" not in args else args)


def test_the_fast_readme_commands_run(standins, capsys):
    shutil.copytree(REPO / "configs", standins / "configs")
    order = ["paligemma-transfer run my_grid.yaml",  # writes runs/demo, which `tables` reads
             "paligemma-transfer run my_grid.yaml --random-init"]
    for command in order:
        assert _run(command) == 0, command
    docvqa = get_task("docvqa")
    ids = [ex.id for ex in docvqa.examples(standins / "data" / "docvqa", "eval")]
    (standins / "preds.jsonl").write_text("".join(json.dumps({"id": i, "prediction": "x"}) + "\n" for i in ids))
    for command in sorted(FAST - {order[0]}):
        assert _run(command) == 0, command
        out = capsys.readouterr().out
        if "--json" in command:
            assert "anls" in json.loads(out)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SLOW - {"paligemma-transfer run my_grid.yaml --backend ray"}))
def test_the_slow_readme_commands_run(standins, command):
    if command.startswith("paligemma-transfer eval"):
        command = (command.replace("ckpt.npz", str(REPO / "checkpoints" / "nano" / "nano-s-32.npz"))
                   .replace("--size 3b --resolution 448", "--size nano-s --resolution 32")
                   .replace("tok.model", str(REPO / "model" / "assets" / "nano_tokenizer.model")))
    assert _run(command) == 0, command
