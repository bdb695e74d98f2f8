"""Each plugin's `version` is part of every cell id, so a change in what a plugin does must bump it.

tests/fixtures/plugin_fingerprints.json holds, per plugin, its version and a fingerprint of its prompts,
targets, references, recipes, parsing and metric (tests/helpers/plugin_fingerprint.py). A fingerprint that
changed while the version did not fails here with what to do.
"""

from __future__ import annotations

import json

import pytest

from tasks.registry import BUILTIN, get_task
from tests.helpers.plugin_fingerprint import FIXTURE, fingerprint

RECORDED = json.loads(FIXTURE.read_text(encoding="utf-8"))


def version_problem(name: str, recorded: dict, version: int, current: str) -> str | None:
    """None when the fixture agrees with the plugin; otherwise what the developer must do."""
    refresh = "then refresh the fixture: python -m tests.helpers.plugin_fingerprint --write"
    if recorded["fingerprint"] == current and recorded["version"] == version:
        return None
    if recorded["fingerprint"] != current and recorded["version"] == version:
        return (f"task {name!r} changed (prompt, targets, parse, metric or recipe) but its `version` is still "
                f"{version}: bump `version` in its plugin so that finished cells are not reused, {refresh}")
    if recorded["version"] > version:
        return f"task {name!r}: version went down from {recorded['version']} to {version}"
    return f"task {name!r}: version {version} is new; {refresh}"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_plugin_behaviour_matches_its_version(name):
    assert name in RECORDED, f"no fingerprint for {name}: python -m tests.helpers.plugin_fingerprint --write"
    problem = version_problem(name, RECORDED[name], get_task(name).version, fingerprint(name))
    assert problem is None, problem


def test_a_changed_parse_without_a_bump_is_caught(monkeypatch):
    from tasks.vqav2 import VQAv2

    before = fingerprint("vqav2")
    monkeypatch.setattr(VQAv2, "parse", lambda self, text: text.strip().upper())
    after = fingerprint("vqav2")
    assert after != before
    recorded = {"version": VQAv2.version, "fingerprint": before}
    assert "bump `version`" in version_problem("vqav2", recorded, VQAv2.version, after)
    assert version_problem("vqav2", recorded, VQAv2.version + 1, after).endswith("--write")


def test_the_version_is_in_the_cell_id(tmp_path, monkeypatch):
    from harness.run import grid as grid_module
    from harness.run.grid import load_grid
    from tasks.vqav2 import VQAv2

    path = tmp_path / "g.yaml"
    path.write_text("name: v\ntasks: [vqav2]\nsizes: [nano-s]\nresolutions: [32]\nlrs: [1.0e-3]\n"
                    "checkpoints: random\n")
    before = load_grid(path).final_cells({("vqav2", "nano-s"): 1e-3})[0].cell_id
    monkeypatch.setattr(VQAv2, "version", VQAv2.version + 1)
    grid_module._task.cache_clear()
    after = load_grid(path).final_cells({("vqav2", "nano-s"): 1e-3})[0].cell_id
    grid_module._task.cache_clear()
    assert before != after and before.rsplit("-", 1)[0] == after.rsplit("-", 1)[0]
