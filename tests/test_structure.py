"""The structure stays as drawn: no import circles between the project's modules (grimp's import graph,
function-level imports included), one atomic writer that fsyncs the file and its folder, one JSON default."""

import dataclasses
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from harness.cell.evaluate import write_jsonl
from results import store
from results.store import atomic_write_text, jsonable

PACKAGES = ("harness", "metrics", "model", "results", "tasks")


def test_no_import_circles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    circles = sorted({tuple(sorted((a, b))) for a in graph.modules
                      for b in graph.find_modules_directly_imported_by(a)
                      if graph.chain_exists(importer=b, imported=a)})
    assert circles == []


def _imports(graph, importer_prefix: str, imported_prefix: str) -> list[tuple[str, str]]:
    return sorted((a, b) for a in graph.modules if a == importer_prefix or a.startswith(importer_prefix + ".")
                  for b in graph.find_modules_directly_imported_by(a)
                  if b == imported_prefix or b.startswith(imported_prefix + "."))


@pytest.mark.parametrize("importer, imported", [
    ("results", "harness"),  # results/ reads records; it never reaches up into the harness
    ("model", "harness"), ("model", "tasks"), ("model", "results"), ("metrics", "harness"),
    ("tasks", "harness"), ("tasks", "results"),
    ("harness.cell", "harness.run"),  # the scheduler calls a cell; a cell never calls back
    ("harness.cell", "harness.pretrain"), ("harness.run", "harness.pretrain"),
])
def test_imports_point_down_the_layers(importer, imported):
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    assert _imports(graph, importer, imported) == []


def _fsynced(monkeypatch) -> list[str]:
    kinds = []
    real = os.fsync

    def spy(fd):
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return kinds


def test_atomic_writer_fsyncs_file_then_folder(tmp_path, monkeypatch):
    kinds = _fsynced(monkeypatch)
    atomic_write_text(tmp_path / "sub" / "a.json", "{}\n")
    assert kinds == ["file", "dir"]
    assert (tmp_path / "sub" / "a.json").read_text() == "{}\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]  # no temp file left


def test_predictions_go_through_the_same_writer(tmp_path, monkeypatch):
    kinds = _fsynced(monkeypatch)
    write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "parsed": np.float32(0.5)}, {"id": "2", "parsed": {3, 1}}])
    assert kinds == ["file", "dir"]
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows == [{"id": "1", "parsed": 0.5}, {"id": "2", "parsed": [1, 3]}]


def test_one_json_default():
    @dataclasses.dataclass
    class Box:
        x: int

    assert jsonable(np.int64(3)) == 3 and jsonable(np.arange(2)) == [0, 1] and jsonable(Path("a/b")) == "a/b"
    assert jsonable(Box(1)) == {"x": 1} and jsonable(frozenset({"b", "a"})) == ["a", "b"]
    with pytest.raises(TypeError, match="object is not JSON-serialisable"):
        jsonable(object())
    assert not hasattr(store, "_jsonable")
    import harness.cell.evaluate

    assert not hasattr(harness.cell.evaluate, "_jsonable")
