"""The default runner's memory check: a cell's memory plan against the devices present.

`run_cell.check` is `check_cell`, which the scheduler calls before the runner compiles anything, so a
cell that cannot fit fails in a millisecond with one line (the cell, the bytes it needs per device, the
devices there are) instead of after minutes of compiling and an out-of-memory error. It is pure
arithmetic (model/cost.py's plan over the cell's effective recipe, harness/cell/recipe.py); the devices
come from jax. A custom runner brings its own check, or none (docs/memory-plan.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.config import PaliGemmaConfig
from model.cost import (
    DEVICE_MEMORY_GIB,
    USABLE_FRACTION,
    MemoryPlan,
    mesh_plans,
)

# Set to 0 to skip the check (e.g. when the plan is known to err high for a device).
CHECK_ENV = "PALIGEMMA_TRANSFER_MEMORY_CHECK"


class CellDoesNotFit(RuntimeError):
    """A cell's memory plan exceeds the devices it would run on."""


def plan_device_name(device_kind: str) -> str | None:
    """jax's `device_kind` (or Ray's accelerator type) -> a model/cost.py device name, None if unknown.

    'NVIDIA H200' -> h200, 'NVIDIA H100 80GB HBM3' -> h100, 'NVIDIA A100-SXM4-80GB' -> a100-80g,
    'TPU v5 lite' / 'TPU-V5LITEPOD' -> tpu-v5e, 'TPU v5p' / 'TPU v5' -> tpu-v5p, 'cpu' -> cpu.
    """
    k = device_kind.lower().replace("_", " ").replace("-", " ")
    if k == "cpu":
        return "cpu"
    for name in ("h200", "h100"):
        if name in k:
            return name
    if "a100" in k:
        return "a100-80g" if "80" in k else "a100-40g"
    if "tpu" in k:
        if "lite" in k or "v5e" in k:
            return "tpu-v5e" if "v5" in k else None
        if "v5" in k:
            return "tpu-v5p"
        if "v4" in k:
            return "tpu-v4"
    return None


def host_memory_bytes() -> int:
    """Physical memory of this host (the capacity of the CPU 'devices')."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Devices:
    """The devices a cell's mesh spans: a plan device name (or jax's own kind when unknown), how many,
    and each one's memory in bytes (None when neither jax nor the table knows it)."""

    name: str
    count: int
    capacity_bytes: int | None

    def describe(self) -> str:
        each = "unknown memory" if self.capacity_bytes is None else \
            f"{self.capacity_bytes * USABLE_FRACTION / 2**30:.1f} GiB usable each"
        return f"{self.count} x {self.name} ({each})"


def local_devices() -> Devices:
    """jax.devices(): on GPU/TPU the allocator's limit when it reports one, else the table; on CPU the
    host's memory shared by its (possibly forced, --xla_force_host_platform_device_count) devices."""
    import jax

    devices = jax.devices()
    first = devices[0]
    name = plan_device_name(first.device_kind) or (
        "cpu" if first.platform == "cpu" else first.device_kind)
    capacity = None
    try:
        stats = first.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
        stats = None
    if stats and stats.get("bytes_limit"):
        capacity = int(stats["bytes_limit"])
    elif name == "cpu":
        capacity = host_memory_bytes() // max(1, len(jax.local_devices()))
    elif name in DEVICE_MEMORY_GIB:
        capacity = int(DEVICE_MEMORY_GIB[name] * 2**30)
    return Devices(name=name, count=len(devices), capacity_bytes=capacity)


@dataclass(frozen=True)
class CellShape:
    """What the memory plan needs to know about a cell, from its recipe and overrides."""

    config: PaliGemmaConfig
    batch_size: int
    text_len: int
    remat: bool
    compute_dtype: str
    model_parallel: int | None  # a fixed mesh's model axis; None: `auto`


def _model_parallel(cell: Any, overrides: dict) -> int | None:
    """The cell's fixed model axis, if its grid gives one (`mesh: {model_parallel: k}`, `mesh: k`)."""
    mesh = getattr(cell, "mesh", None)
    if mesh is None:
        mesh = overrides.pop("mesh", None)
    else:
        overrides.pop("mesh", None)
    if isinstance(mesh, Mapping):
        mesh = mesh.get("model_parallel", mesh.get("model"))
    if mesh is None or mesh == "auto":
        return None
    return int(mesh)


def cell_shape(cell: Any) -> CellShape:
    """What the memory plan needs of `cell`: its effective recipe (harness/cell/recipe.py), as it runs."""
    from harness.cell.recipe import effective

    overrides = dict(cell.overrides)
    model_parallel = _model_parallel(cell, overrides)
    eff = effective(cell.task, cell.size, cell.resolution, cell.lr, overrides)
    return CellShape(config=eff.model_config, batch_size=eff.recipe.batch_size, text_len=eff.recipe.text_len,
                     remat=eff.remat, compute_dtype=eff.compute_dtype, model_parallel=model_parallel)


def _plans(shape: CellShape, devices: Devices) -> list[MemoryPlan]:
    plans = mesh_plans(shape.config, text_len=shape.text_len, batch_size=shape.batch_size, device=devices.name,
                       num_devices=devices.count, remat=shape.remat, compute_dtype=shape.compute_dtype,
                       capacity_bytes=devices.capacity_bytes)
    if shape.model_parallel is not None:
        plans = [p for p in plans if p.model_parallel == shape.model_parallel]
    return plans


def check_cell(cell: Any, devices: Devices | None = None) -> MemoryPlan | None:
    """The plan the cell runs under (its fixed mesh, or the one `auto` picks), or CellDoesNotFit.

    Returns None without checking when the devices' memory is unknown or CHECK_ENV is 0.
    """
    if os.environ.get(CHECK_ENV, "1") == "0":
        return None
    devices = local_devices() if devices is None else devices
    if devices.capacity_bytes is None:
        return None
    shape = cell_shape(cell)
    plans = _plans(shape, devices)
    for plan in plans:
        if plan.fits:
            return plan
    what = (f"{shape.config.name}, batch {shape.batch_size}, text_len {shape.text_len}"
            f"{', remat' if shape.remat else ''}, {shape.compute_dtype}")
    if not plans:
        mesh = "" if shape.model_parallel is None else f" with model_parallel {shape.model_parallel}"
        raise CellDoesNotFit(f"{cell.cell_id}: no mesh{mesh} on {devices.describe()} splits {what} evenly "
                             f"(the data axis must divide the batch, the model axis the heads and MLP)")
    best = min(plans, key=lambda p: p.bytes_per_device)
    raise CellDoesNotFit(
        f"{cell.cell_id}: needs {best.bytes_per_device / 2**30:.1f} GiB per device ({what}, best mesh "
        f"{best.mesh}) but has {devices.describe()}; use more devices, a smaller batch_size, or remat: true")
