"""What a cell asks Ray for: the accelerators its memory plan needs on the cluster's nodes
(docs/memory-plan.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from harness.cell.memory_check import CHECK_ENV, CellDoesNotFit, cell_shape, plan_device_name
from model.cost import smallest_mesh


def cluster_accelerators(nodes: list[Mapping[str, Any]]) -> tuple[str | None, str | None, int]:
    """(resource 'GPU' / 'TPU' or None, plan device name or None, most of it on one node) from
    ray.nodes() entries (their 'Resources' and 'Alive')."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    for key in ("TPU", "GPU"):
        per_node = [int(r.get(key, 0)) for r in alive]
        if max(per_node, default=0) > 0:
            kinds = {k.split(":", 1)[1] for r in alive for k in r if k.startswith("accelerator_type:")}
            names = {plan_device_name(k) for k in kinds} - {None, "cpu"}
            return key, (names.pop() if len(names) == 1 else None), max(per_node)
    return None, None, 0


def ray_request(cell: Any, nodes: list[Mapping[str, Any]], num_cpus: float,
                planned: bool = True) -> dict[str, Any]:
    """Ray options for the cell's task: as many GPUs (num_gpus) or TPU chips (resources={'TPU': n}) as the
    smallest fitting mesh on the cluster's accelerator needs, or `num_cpus` CPUs on a CPU-only cluster.

    One task runs on one node, so a plan needing more accelerators than the largest node has is
    refused (CellDoesNotFit). When the accelerator type is unknown (no accelerator_type label Ray
    knows) the task asks for one and the worker's own check_cell, which sees its real devices,
    decides. `planned` is False for a runner without a memory check (the plan is the default runner's):
    such a cell asks for one accelerator.
    """
    resource, name, per_node = cluster_accelerators(nodes)
    if resource is None:
        return {"num_cpus": num_cpus}
    count = 1
    if planned and name is not None and os.environ.get(CHECK_ENV, "1") != "0":
        shape = cell_shape(cell)
        plan = smallest_mesh(shape.config, shape.text_len, shape.batch_size, name, max_devices=per_node,
                             remat=shape.remat, compute_dtype=shape.compute_dtype)
        if plan is None:
            raise CellDoesNotFit(
                f"{cell.cell_id}: {shape.config.name} at batch {shape.batch_size}, text_len {shape.text_len} "
                f"fits no mesh of at most {per_node} x {name} (the most on one Ray node)")
        count = plan.num_devices
    if resource == "GPU":
        return {"num_cpus": num_cpus, "num_gpus": count}
    return {"num_cpus": num_cpus, "resources": {"TPU": count}}
