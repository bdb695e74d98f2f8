"""The cell id names the base checkpoint's content; a file swapped between loading the grid and the cell's
start is refused in one line instead of training under the old id."""

from __future__ import annotations

import dataclasses
import os

import pytest

from harness.cell.fingerprint import fingerprint
from harness.cell.run_cell import check_base_checkpoint


def test_a_base_checkpoint_replaced_after_loading_the_grid_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "base.npz"
    ckpt.write_bytes(b"weights v1" * 100)
    cell = dataclasses.make_dataclass("C", ["cell_id", "checkpoint", "identity"])(
        "c-1", str(ckpt), (("checkpoint_sha256", f'"{fingerprint(str(ckpt))}"'),))
    check_base_checkpoint(cell)  # unchanged: passes
    st = ckpt.stat()
    ckpt.write_bytes(b"weights v2" * 100)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ValueError, match=r"c-1: base checkpoint .* is not the one this cell's id names"):
        check_base_checkpoint(cell)
