"""Stale cells: a cell's id covers everything that changes its result, so a re-trained
checkpoint at the same path, a changed in-code recipe, tokenizer, project version or demo data size gives
new ids instead of silently reusing finished records."""

from __future__ import annotations

import os

import pytest

from harness.cell import fingerprint as fp
from harness.run import grid as grid_module
from harness.run.grid import load_grid

GRID = """\
name: ident
demo: {{num_train: 8, num_eval: {num_eval}, seed: 0}}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
data_root: {data}
checkpoints: {ckpt}
overrides:
  all: {{steps: 3, tokenizer: {tok}}}
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    ckpt, tok = tmp_path / "base-{size}-{resolution}.npz", tmp_path / "tok.model"
    (tmp_path / "base-nano-s-32.npz").write_bytes(b"weights v1" * 100)
    tok.write_bytes(b"tokenizer v1")

    def cell_id(num_eval: int = 4) -> str:
        path = tmp_path / "grid.yaml"
        path.write_text(GRID.format(num_eval=num_eval, data=tmp_path / "data", ckpt=ckpt, tok=tok))
        return load_grid(path).final_cells({("vqav2", "nano-s"): 1e-3})[0].cell_id
    return tmp_path, cell_id


def _rewrite(path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_retrained_checkpoint_at_the_same_path_changes_the_id(setup):
    tmp_path, cell_id = setup
    before = cell_id()
    assert cell_id() == before  # stable
    _rewrite(tmp_path / "base-nano-s-32.npz", b"weights v2" * 100)
    after = cell_id()
    assert after != before and after.startswith("vqav2-nano-s-32-lr1e-03-s0-")


def test_tokenizer_content_changes_the_id(setup):
    tmp_path, cell_id = setup
    before = cell_id()
    _rewrite(tmp_path / "tok.model", b"tokenizer v2")
    assert cell_id() != before


def test_in_code_recipe_change_changes_the_id(setup, monkeypatch):
    from tasks.vqav2 import VQAv2

    _, cell_id = setup
    before = cell_id()
    original = VQAv2.recipe
    monkeypatch.setattr(VQAv2, "recipe", lambda self, s, r: original(self, s, r).replace(max_decode_len=7))
    assert cell_id() != before


def test_project_version_and_demo_sizes_change_the_id(setup, monkeypatch):
    _, cell_id = setup
    before = cell_id()
    assert cell_id(num_eval=5) != before
    monkeypatch.setattr(grid_module, "project_version", lambda: "999.0")
    assert cell_id() != before


def test_fingerprint_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    first = fp.fingerprint(str(f))
    assert (tmp_path / "cache" / "fingerprints.json").is_file()
    fp._memo.clear()
    calls = []
    monkeypatch.setattr(fp, "_digest_file", lambda *a: calls.append(a) or "x")
    assert fp.fingerprint(str(f)) == first and not calls  # read from the on-disk cache
    assert fp.fingerprint("random") == "random" and fp.fingerprint(str(tmp_path / "nope")) == "missing"
    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    assert len(fp.fingerprint(str(d))) == 64


def test_tables_warn_when_records_mix_plugin_or_project_versions(tmp_path, capsys):
    from harness.run.grid import load_grid
    from harness.run.scheduler import run_grid
    from results.store import load_records, record_path, write_record
    from results.tables import version_mix, write_tables

    path = tmp_path / "g.yaml"
    path.write_text(f"name: mix\ndemo: true\ntasks: [vqav2]\nsizes: [nano-s, nano-m]\nresolutions: [32]\n"
                    f"lrs: [1.0e-3]\ndata_root: {tmp_path}\ncheckpoints: random\n"
                    "runner: tests.helpers.fake_runner:run\n")
    workdir = tmp_path / "w"
    records = run_grid(load_grid(path), workdir, progress=False)
    assert version_mix(load_records(workdir)) is None
    old = records[0]
    write_record(workdir, type(old)(**{**old.to_json(), "config": {**old.config, "task_version": 0}}))
    assert record_path(workdir, old.cell_id).is_file()
    capsys.readouterr()
    write_tables(workdir)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "mix" in line]
    from tasks.registry import get_task

    current = get_task("vqav2").version
    assert len(warnings) == 1 and f"vqav2 plugin versions ['0', '{current}']" in warnings[0]
