"""docs/adding-a-task.md's localization plugin runs as written and keeps the contract the page states:
targets parse back to their references, malformed output parses without raising and scores as a miss,
references and parsed predictions survive a JSON round trip, and a demo grid naming it expands."""

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE = (REPO / "docs" / "adding-a-task.md").read_text()


def _example() -> str:
    start = GUIDE.index("<!-- localization-example -->")
    return re.search(r"```python\n(.*?)```", GUIDE[start:], re.S).group(1)


def _grid() -> str:
    return textwrap.dedent(re.search(r"```yaml\n(.*?)```", GUIDE, re.S).group(1))


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    # Imported once: TFDS registers a builder class by name, and a second import would register it again.
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "find_square.py").write_text(_example())
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        from tasks import registry

        mp.setitem(registry.BUILTIN, "find_square", "find_square:FindSquare")  # the one-line registration
        yield registry.get_task("find_square")
    sys.modules.pop("find_square", None)


@pytest.fixture(scope="module")
def demo(plugin, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    plugin.write_demo(data, num_train=4, num_eval=5, seed=0)
    return list(plugin.examples(data, "eval"))


def test_targets_parse_back_to_the_references_and_score_perfectly(plugin, demo):
    references = {ex.id: ex.reference for ex in demo}
    predictions = {ex.id: plugin.parse(ex.targets[0]) for ex in demo}
    for ex in demo:
        assert predictions[ex.id] == pytest.approx(ex.reference, abs=0.5 / 1023)  # one loc bin
    scores = plugin.score(predictions, references)
    assert scores.metrics[plugin.headline] == 1.0 and scores.metrics["mean_iou"] > 0.98
    assert scores.num_examples == 5 and scores.num_unparsable == 0


@pytest.mark.parametrize("text", ["", "square", "<loc0001><loc0002> square", "<loc12><loc0002><loc0003><loc0004>",
                                  "<loc2000><loc0002><loc0003><loc0004>", "<loc0001><loc0002><loc0003", "\x00<loc"])
def test_malformed_output_is_a_miss_not_a_crash(plugin, demo, text):
    assert plugin.parse(text) is None
    references = {ex.id: ex.reference for ex in demo}
    scores = plugin.score({demo[0].id: plugin.parse(text)}, references)  # the rest have no prediction at all
    assert scores.metrics["box_acc"] == 0.0 and scores.num_unparsable == 5


def test_references_and_parsed_predictions_are_json(plugin, demo):
    references = {ex.id: ex.reference for ex in demo}
    predictions = {ex.id: plugin.parse(ex.targets[0]) for ex in demo}
    assert json.loads(json.dumps(references)) == references
    assert json.loads(json.dumps(predictions)) == predictions
    assert plugin.score(json.loads(json.dumps(predictions)), json.loads(json.dumps(references))) == \
        plugin.score(predictions, references)


def test_the_guides_demo_grid_expands(plugin, tmp_path):
    from harness.run.grid import load_grid

    (tmp_path / "find_square.yaml").write_text(_grid())
    grid = load_grid(tmp_path / "find_square.yaml", check_files=False)
    assert grid.tasks == ("find_square",) and grid.demo and not grid.swept("find_square", "nano-s")
    cells = grid.final_cells(grid.fixed_lrs())
    assert sorted((c.size, c.resolution, c.lr) for c in cells) == [("nano-s", 32, 1e-3), ("nano-s", 64, 1e-3)]
    assert {dict(c.overrides)["steps"] for c in cells} == {50}
