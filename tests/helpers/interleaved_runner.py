"""The real cell runner on a mesh whose `data` axis alternates between processes (p0, p1, p0, p1, ...), as
a TPU pod's torus order spreads one host's chips along `data`: each process's batch rows are not one
range. Each process writes the rows it fed to cells/<cell_id>/rows-<process>.json for the test to read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from harness.cell import run_cell as cell_module
from harness.cell.mesh import resolve_mesh
from model import sharding


def interleaved_devices() -> list:
    """Every process's i-th device, then every process's (i+1)-th, and so on."""
    by_process: dict[int, list] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    local = min(len(d) for d in by_process.values())
    return [by_process[p][i] for i in range(local) for p in sorted(by_process)]


def run(cell: Any, cell_dir: Path) -> dict:
    def interleaved(request, config, **kwargs):
        mesh = resolve_mesh(request, config, **{**kwargs, "devices": interleaved_devices()})
        rows = sharding.process_rows(sharding.batch_sharding(mesh), kwargs["batch_size"])
        fed = np.arange(kwargs["batch_size"])[rows].tolist()
        Path(cell_dir).mkdir(parents=True, exist_ok=True)
        (Path(cell_dir) / f"rows-{jax.process_index()}.json").write_text(json.dumps(fed))
        return mesh

    original = cell_module.resolve_mesh
    cell_module.resolve_mesh = interleaved
    try:
        return cell_module.run_cell(cell, cell_dir)
    finally:
        cell_module.resolve_mesh = original


run.check = cell_module.run_cell.check
