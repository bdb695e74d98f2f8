"""The README's promises: its first lines are the two commands, and the code examples it points to run as
written (the plugin in docs/adding-a-task.md, the Python API in docs/design.md)."""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _block(after: str, doc: str) -> str:
    text = (REPO / doc).read_text()
    start = text.index(after)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_first_lines_are_the_install_and_run_and_the_test_commands():
    lines = README.splitlines()
    assert lines[2] == "```bash"
    assert "pip install -e ." in lines[3] and "paligemma-transfer run" in lines[3]
    assert lines[4].split("#")[0].strip() in (REPO / ".ci" / "run").read_text()


def test_python_api_example_runs(tmp_path, monkeypatch):
    code = _block("<!-- python-api-example -->", "docs/design.md")
    code = code.replace("/tmp/nano-s-32.npz", str(tmp_path / "n.npz"))
    monkeypatch.chdir(REPO)
    exec(compile(code, "docs/design.md", "exec"), {})


def test_plugin_example_is_one_file_and_one_registration_and_runs_a_cell(tmp_path, monkeypatch):
    from dataclasses import dataclass

    from harness.cell.run_cell import run_cell
    from tasks import registry

    (tmp_path / "count_shapes.py").write_text(_block("<!-- plugin-example -->", "docs/adding-a-task.md"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.BUILTIN, "count_shapes", "count_shapes:CountShapes")  # the registration
    task = registry.get_task("count_shapes")
    task.write_demo(tmp_path / "data", num_train=6, num_eval=3, seed=0)

    @dataclass(frozen=True)
    class Cell:
        task: str = "count_shapes"
        size: str = "nano-s"
        resolution: int = 32
        lr: float = 1e-3
        seed: int = 0
        split: str = "eval"
        checkpoint: str = "random"
        data_dir: str = str(tmp_path / "data")
        overrides: tuple = (("steps", 2), ("batch_size", 2))
        cell_id: str = "count_shapes-test"

    out = run_cell(Cell(), tmp_path / "cell", progress=False)
    assert out["headline"] == "accuracy" and 0.0 <= out["metrics"]["accuracy"] <= 1.0
    assert out["num_eval_examples"] == 3 and (tmp_path / "cell" / "predictions.jsonl").exists()
    sys.modules.pop("count_shapes", None)
