"""The task registry: built-ins plus entry points, and a clear error when two plugins claim one name.

Entry points are real ones: each test writes a distribution's `*.dist-info` (METADATA + entry_points.txt) into
a folder on sys.path, which is what `pip install` of a plugin package leaves behind for importlib.metadata.
"""

from pathlib import Path

import pytest

from harness.cli import main
from tasks import registry


def _install(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")


def test_an_entry_point_plugin_is_listed_and_loaded(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text("from tasks.vqav2 import VQAv2\n\nclass Mine(VQAv2):\n    name = 'mine'\n")
    _install(tmp_path, "my_plugin", {"mine": "my_plugin:Mine"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.available()["mine"] == "my_plugin:Mine"
    assert type(registry.get_task("mine")).__name__ == "Mine"


def test_an_entry_point_reusing_a_built_in_name_is_an_error_naming_both(tmp_path, monkeypatch, capsys):
    _install(tmp_path, "shadowing_plugin", {"vqav2": "shadowing_plugin:MyVQA"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError) as error:
        registry.get_task("docvqa")  # any lookup: the clash is reported, not hidden until someone asks for vqav2
    message = str(error.value)
    assert "\n" not in message
    for part in ("entry point vqav2", "shadowing_plugin:MyVQA", "shadowing_plugin 0.1", "built-in task 'vqav2'",
                 "tasks.vqav2:VQAv2"):
        assert part in message

    assert main(["tasks"]) == 2  # the CLI prints it as its one-line error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("paligemma-transfer tasks: error: entry point vqav2")


def test_two_installed_plugins_with_one_name_are_an_error(tmp_path, monkeypatch):
    _install(tmp_path, "plugin_a", {"shapes": "plugin_a:Shapes"})
    _install(tmp_path, "plugin_b", {"shapes": "plugin_b:Shapes"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"entry point shapes = 'plugin_\w:Shapes'.*another installed plugin"):
        registry.available()


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown task 'nope'; known tasks: .*vqav2"):
        registry.get_task("nope")
