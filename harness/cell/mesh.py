"""A cell's mesh request (the grid's `mesh:` field) -> a jax Mesh over the devices this run has.

`auto` (and no `mesh:` at all) asks the memory plan (model.cost.auto_model_parallel) for the model axis
that fits, and puts the other devices on 'data'; on a CPU, which has no memory figures, that is 1 (pure
FSDP). `{model_parallel: M}` gives data = devices / M; `{data: D, model: M}` must cover the devices
exactly. Where no dim of some parameter divides by D (SigLIP on 256 chips), the data devices are split
into a minor axis as well (model.cost.data_minor), so that parameter is split over two of its dims.
The mesh changes where the numbers are computed, not what they are, so it is not part of a cell's
identity (harness/run/grid.py).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh

from harness.cell.recipe import AUTO_MESH, MeshRequest
from model import cost, sharding
from model.config import PaliGemmaConfig

# jax's device_kind -> the device names model.cost's memory plan knows.
DEVICE_NAMES = (("h200", "h200"), ("h100", "h100"), ("a100", "a100-80g"), ("v5 lite", "tpu-v5e"),
                ("v5e", "tpu-v5e"), ("v5p", "tpu-v5p"), ("tpu v5", "tpu-v5p"))


def device_name(device: jax.Device) -> str:
    """'NVIDIA H200' -> 'h200', 'TPU v5 lite' -> 'tpu-v5e'; anything else its lowercased kind ('cpu')."""
    kind = device.device_kind.lower()
    for needle, name in DEVICE_NAMES:
        if needle in kind:
            return name
    return kind


def auto_model_parallel(config: PaliGemmaConfig, *, text_len: int, batch_size: int, devices: list,
                        remat: bool = False, compute_dtype: str = "float32") -> int:
    """The model axis the memory plan (model.cost.auto_model_parallel) picks for this cell on `devices`.

    On a device it has no memory figures for (a CPU) this is model_parallel 1: pure FSDP over all
    devices, the layout that keeps the least state per device.
    """
    name = device_name(devices[0])
    if name == "cpu":
        return 1
    return int(cost.auto_model_parallel(config, text_len=text_len, batch_size=batch_size, device=name,
                                        num_devices=len(devices), remat=remat, compute_dtype=compute_dtype))


def resolve_mesh(request: MeshRequest, config: PaliGemmaConfig, *, text_len: int, batch_size: int,
                 remat: bool = False, compute_dtype: str = "float32", devices: list | None = None) -> Mesh:
    """The Mesh for one cell; a request that does not fit the devices or the batch is a one-line error."""
    devices = list(jax.devices() if devices is None else devices)
    if request is None or request == AUTO_MESH:
        mp = auto_model_parallel(config, text_len=text_len, batch_size=batch_size, devices=devices,
                                 remat=remat, compute_dtype=compute_dtype)
        data, model = sharding.axes_for(len(devices), model=mp)
    else:
        axes: dict[str, Any] = dict(request)
        if "model_parallel" in axes:
            axes = {"model": axes["model_parallel"]}
        data, model = sharding.axes_for(len(devices), data=axes.get("data"), model=axes.get("model"))
    mesh = sharding.make_mesh(model, devices=devices, data_minor=cost.data_minor(config, data, model))
    sharding.check_batch(batch_size, mesh, where=f"mesh {describe(request)} on {len(devices)} device(s)",
                         fix="set the grid's mesh (or overrides batch_size) so that data divides the batch")
    return mesh


def describe(request: MeshRequest) -> str:
    if request is None or request == AUTO_MESH:
        return AUTO_MESH
    return "{" + ", ".join(f"{k}: {v}" for k, v in request.items()) + "}"
