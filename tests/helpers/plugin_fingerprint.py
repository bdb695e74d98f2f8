"""A fingerprint of what a task plugin does, for tests/test_plugin_versions.py.

It hashes the plugin's prompts, targets and references on its own demo examples, its recipe for every
size and resolution of both families, its parse of sample outputs, and its metric on two fixed cases
(perfect predictions, and every prediction moved to the next example). Images are left out: their pixels
depend on the fonts installed, not on the plugin.

Refresh the fixture after bumping a plugin's `version`:
    python -m tests.helpers.plugin_fingerprint --write
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "plugin_fingerprints.json"
GARBAGE = ("", "   ", "<loc0000><loc1023> x", "unparsable {[ output", "0")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__, **{k: _plain(v) for k, v in dataclasses.asdict(value).items()}}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return {"__type__": type(value).__name__, "repr": repr(value)}


def plugin_facts(name: str) -> dict[str, Any]:
    """What the fingerprint hashes, as plain data (kept readable for a diff when a test fails)."""
    from model.config import FAMILIES
    from tasks.registry import get_task

    task = get_task(name)
    if hasattr(task, "_annotator_choice"):  # mimic_cxr: the lexicon annotator, present everywhere
        task._annotator_choice = "lexicon"
    recipes = {}
    for spec in FAMILIES.values():
        for size in spec["sizes"]:
            for res in spec["resolutions"]:
                recipes[f"{size}-{res}"] = _plain(task.recipe(size, res))
    with tempfile.TemporaryDirectory() as tmp:
        task.write_demo(Path(tmp) / "raw", num_train=4, num_eval=3, seed=0)
        examples = {role: [(ex.id, ex.prefix, list(ex.targets), _plain(ex.reference))
                           for ex in task.examples(Path(tmp) / "raw", role, Path(tmp) / "prepared")]
                    for role in ("train", "eval")}
    evals = examples["eval"]
    references = {i: ref for i, _, _, ref in evals}
    outputs = [t for _, _, targets, _ in evals for t in targets] + list(GARBAGE)
    parsed = {i: task.parse(targets[0] if targets else "") for i, _, targets, _ in evals}
    moved = {evals[k][0]: parsed[evals[(k + 1) % len(evals)][0]] for k in range(len(evals))}
    scores = [task.score(parsed, references), task.score(moved, references)]
    # Only what does not depend on the machine: the headline metric to 6 places and the counts (SPICE and
    # METEOR need Java, RadGraph a model that may or may not be installed, last digits vary by platform).
    return {"headline": task.headline, "splits": dict(task.splits), "recipes": recipes, "examples": examples,
            "parse": [[o, _plain(task.parse(o))] for o in outputs],
            "score": [[round(float(s.metrics[task.headline]), 6), s.num_examples, s.num_unparsable]
                      for s in scores]}


def fingerprint(name: str) -> str:
    blob = json.dumps(plugin_facts(name), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def current() -> dict[str, dict[str, Any]]:
    from tasks.registry import BUILTIN, get_task

    return {name: {"version": get_task(name).version, "fingerprint": fingerprint(name)} for name in sorted(BUILTIN)}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        print(json.dumps(current(), indent=1))
    else:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {FIXTURE}")
