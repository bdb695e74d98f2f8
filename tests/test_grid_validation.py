"""A grid is checked whole when it is loaded (and so by --dry-run): every bad field is one line naming the
file, line and field, before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.run.grid import GridError, load_grid

REPO = Path(__file__).resolve().parent.parent
GRID = """\
name: check
tasks: [vqav2, docvqa]
sizes: [nano-s]
resolutions: [32, 64]
lrs: [1.0e-3]
data_root: {data}
checkpoints: random
"""


@pytest.mark.parametrize("extra, match", [
    ("protocol:\n  final: {split: evl}\n",
     r":9: protocol\.final\.split: vqav2 has no split role 'evl' \(did you mean 'eval'\?\)"),
    ("protocol:\n  sweep: {resolution: 128}\n",
     r":9: protocol\.sweep\.resolution: 128 is not one of the grid's resolutions"),
    ("overrides:\n  all: {steps: -6}\n", r":9: overrides\.all\.steps: -6 is not an integer >= 1"),
    ("overrides:\n  docvqa: {batch_size: 0}\n", r":9: overrides\.docvqa\.batch_size: 0 is not an integer >= 1"),
    ("overrides:\n  all: {text_len: long}\n", r":9: overrides\.all\.text_len: 'long' is not an integer >= 2"),
])
def test_a_bad_field_is_one_line_naming_file_line_and_field(tmp_path, extra, match):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data") + extra)
    with pytest.raises(GridError, match=match):
        load_grid(path)


def test_an_lr_mapping_where_a_list_belongs_says_so(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data").replace("lrs: [1.0e-3]", "lrs:\n  default: {a: 1}"))
    with pytest.raises(GridError, match=r":6: lrs\.default: expected a list of learning rates"):
        load_grid(path)


def test_dry_run_names_a_missing_data_folder(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data"))
    assert main(["run", str(path), "--dry-run", "--workdir", str(tmp_path / "wd")]) == 0
    err = capsys.readouterr().err
    assert f"warning: vqav2: data folder {tmp_path / 'data' / 'vqav2'} is missing or empty" in err
    assert not (tmp_path / "wd").exists()


def test_a_closed_pipe_ends_quietly():
    script = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'harness.cli', 'tasks', "
              "'--recipes'], stdout=subprocess.PIPE, stderr=subprocess.PIPE); p.stdout.readline(); "
              "p.stdout.close(); err = p.stderr.read().decode(); rc = p.wait(); print(rc, len(err.splitlines()))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    rc, lines = out.stdout.split()
    assert (rc, lines) == ("0", "0"), out.stderr
