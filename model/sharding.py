"""Device mesh and partition rules: FSDP over 'data', optional tensor parallelism over 'model'.

big_vision trains PaliGemma with FSDP over a `data` mesh axis (docs/paligemma2-facts.md §1.4, §1.8): every
parameter is split along one axis across the data-parallel devices and gathered for its matmul. The
optional `model` axis splits attention heads and the MLP hidden dimension, for models whose single
layer or activations do not fit one device. Rules are keyed on big_vision's parameter names (facts
§1.5), which this project's modules mirror; axes are counted from the end so the same rule holds
with or without the leading scan (layer) axis.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA, MODEL = "data", "model"

# (path regex, axis split over 'model'), first match wins. Shapes without the scan axis:
MODEL_AXIS_RULES: tuple[tuple[str, int], ...] = (
    (r"attn/q_einsum/w$", -3),                # (N, D, H): query heads
    (r"attn/qkv_einsum/w$", -3),              # (3, N, D, H): heads, when kv_heads == heads
    (r"attn/kv_einsum/w$", -3),               # (2, K, D, H): kv heads
    (r"attn/attn_vec_einsum/w$", -3),         # (N, H, D): heads
    (r"mlp/gating_einsum$", -1),              # (2, D, F): hidden
    (r"mlp/linear$", -2),                     # (F, D): hidden
    (r"MultiHeadDotProductAttention_0/(query|key|value)/kernel$", -2),  # (W, heads, hd)
    (r"MultiHeadDotProductAttention_0/(query|key|value)/bias$", -2),    # (heads, hd)
    (r"MultiHeadDotProductAttention_0/out/kernel$", -3),                # (heads, hd, W)
    (r"MlpBlock_0/Dense_0/kernel$", -1),      # (W, M): hidden
    (r"MlpBlock_0/Dense_0/bias$", -1),        # (M,)
    (r"MlpBlock_0/Dense_1/kernel$", -2),      # (M, W): hidden
)


def make_mesh(model_parallel: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all), with `model_parallel` devices per model group."""
    devices = list(jax.devices() if devices is None else devices)
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} must be >= 1 and divide the "
                         f"{len(devices)} devices")
    shape = (len(devices) // model_parallel, model_parallel)
    return jax.make_mesh(shape, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def partition_spec(path: str, shape: Sequence[int], mesh_shape: Mapping[str, int],
                   rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES) -> PartitionSpec:
    """Where one parameter lives: its rule's axis over 'model', its largest other divisible axis over 'data'.

    An axis that does not divide by the mesh size stays whole (e.g. 4 kv heads on 8 model devices),
    so any config runs on any mesh, at worst with more replication.
    """
    spec: list[str | None] = [None] * len(shape)
    model_size, data_size = mesh_shape.get(MODEL, 1), mesh_shape.get(DATA, 1)
    if model_size > 1:
        for pattern, axis in rules:
            if re.search(pattern, path):
                if len(shape) >= -axis and shape[axis] % model_size == 0:
                    spec[axis] = MODEL
                break
    if data_size > 1:
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % data_size == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = DATA
    return PartitionSpec(*spec)


def _path_str(path: tuple) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def param_shardings(params, mesh: Mesh, rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES):
    """A NamedSharding per leaf of `params` (arrays or jax.ShapeDtypeStruct, e.g. from eval_shape)."""
    mesh_shape = dict(mesh.shape)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, partition_spec(_path_str(path), x.shape, mesh_shape, rules)),
        params)


def shard_params(params, mesh: Mesh, rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES):
    """`params` placed on `mesh` by the partition rules."""
    return jax.device_put(params, param_shardings(params, mesh, rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch axis (the leading one) split over 'data', replicated over 'model'."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    """The whole value on every device of `mesh` (scalars, rng keys, step counters)."""
    return NamedSharding(mesh, PartitionSpec())


def local_mesh() -> Mesh:
    """A 1x1 mesh over this process's first device: the default, so single-device callers keep working."""
    return make_mesh(1, devices=jax.local_devices()[:1])


def mesh_from_axes(data: int | None = None, model: int | None = None,
                   devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh from either axis, the other filled in from the device count.

    `data * model` must equal the number of devices: a mesh that leaves devices idle is a mistake in
    the grid file, not something to guess around.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    for name, value in (("data", data), ("model", model)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"mesh {name}={value!r}; expected an integer >= 1")
    if model is None:
        model = 1 if data is None else n // data if n % data == 0 else 0
    if data is None:
        data = n // model if n % model == 0 else 0
    if data * model != n:
        raise ValueError(f"mesh data={data} x model={model} does not cover the {n} device(s) here; "
                         f"data x model must equal the device count")
    return make_mesh(model, devices=devices)


def check_batch(batch_size: int, mesh: Mesh, *, where: str = "", fix: str = "") -> int:
    """The global batch size, if it splits evenly over the mesh's 'data' axis; else a one-line error.

    One check for every caller: the grid (`harness.mesh.resolve_mesh`, once per cell) passes what it was
    asked for as `where` and the grid field to change as `fix`; the trainer checks each step's batch.
    """
    data = mesh.shape[DATA]
    if batch_size % data:
        where = where or f"mesh data={data} x model={mesh.shape[MODEL]}"
        fix = fix or f"choose a batch size divisible by {data} or another mesh"
        raise ValueError(f"{where} has a data axis of {data}, which does not split the batch size "
                         f"{batch_size}; {fix}")
    return batch_size


def mesh_info(mesh: Mesh) -> dict:
    """What a record says about the mesh a cell ran on (it does not change the cell's numbers)."""
    devices = mesh.devices.flat
    first = next(iter(devices))
    return {"data": int(mesh.shape[DATA]), "model": int(mesh.shape[MODEL]), "devices": int(mesh.size),
            "device_kind": first.device_kind, "processes": len({d.process_index for d in mesh.devices.flat})}


def axis_spec(shape: Sequence[int], mesh: Mesh, axes: Mapping[int, str]) -> PartitionSpec:
    """`axes` {dim: mesh axis} kept where the dim divides by that axis' size, else that dim replicated."""
    spec: list[str | None] = [None] * len(shape)
    for dim, name in axes.items():
        size = mesh.shape[name]
        if size > 1 and shape[dim] % size == 0:
            spec[dim] = name
    return PartitionSpec(*spec)


def kv_cache_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """A decoding cache entry [B, K, ...] (keys [B, K, hd, S], values [B, K, S, hd]): batch over 'data',
    KV heads over 'model', each only where it divides (8 beams x 2 rows on 4 data devices does, 1 KV head
    on 2 model devices does not and stays whole)."""
    axes = {0: DATA}
    if len(shape) >= 2:
        axes[1] = MODEL
    return NamedSharding(mesh, axis_spec(shape, mesh, axes))


def rows_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """Leading axis over 'data' where it divides, else replicated (decode inputs, per-example state)."""
    return NamedSharding(mesh, axis_spec(shape, mesh, {0: DATA}) if len(shape) else PartitionSpec())


def with_shardings(abstract, shardings):
    """jax.ShapeDtypeStruct leaves carrying `shardings` (an orbax restore target that lands sharded)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


def place(tree, shardings):
    """Put every leaf of `tree` where `shardings` says, from host arrays or from device arrays.

    Host (numpy) leaves go through make_array_from_callback, which every process of a multi-host job
    calls with the same full value and which copies to each device only its own shard; device arrays
    already placed so are passed through.
    """
    def one(x, s):
        if isinstance(x, jax.Array):
            return x if x.sharding == s else jax.device_put(x, s)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
    return jax.tree.map(one, tree, shardings)


def process_rows(sharding: NamedSharding, global_rows: int) -> slice:
    """The rows of a batch this process feeds: those its devices hold under `sharding`.

    On one process, all of them. On a multi-host mesh the 'data' axis is split between hosts, so each
    loads only its slice of every global batch; jax.make_array_from_process_local_data then assembles
    the global array without any host seeing the whole batch.
    """
    index_map = sharding.addressable_devices_indices_map((global_rows,))
    spans = sorted({(idx[0].start or 0, global_rows if idx[0].stop is None else idx[0].stop)
                    for idx in index_map.values()})
    start, stop = spans[0][0], spans[-1][1]
    covered = sum(b - a for a, b in spans)
    if covered != stop - start:
        raise ValueError(f"this process's devices hold non-contiguous rows {spans} of the batch")
    return slice(start, stop)


def put_batch(batch: Mapping[str, Any], sharding: NamedSharding, global_rows: int | None = None) -> dict:
    """A batch of host arrays -> global arrays under `sharding` (its leading axis over 'data').

    `batch` holds this process's rows (`process_rows`); on one process that is the whole batch.
    """
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        shape = None if global_rows is None else (global_rows,) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
    return out


def initialize_distributed() -> bool:
    """Join a multi-host job when the environment describes one; on one host, do nothing.

    Recognised: JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID), SLURM with more than one
    task, Open MPI with more than one rank, and Cloud TPU pods listing several workers; JAX fills
    in what these do not give. Returns whether it initialised.
    """
    env = os.environ
    explicit = "JAX_COORDINATOR_ADDRESS" in env
    multi_host = (
        explicit
        or _env_int("SLURM_NTASKS", 1) > 1
        or _env_int("OMPI_COMM_WORLD_SIZE", 1) > 1
        or len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
    )
    if not multi_host:
        return False
    kwargs = {}
    if explicit:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
        for name, key in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
            if key in env:
                kwargs[name] = _env_int(key, 0)
    # CPU processes exchange collectives over gloo (GPUs and TPUs have their own transports).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}; expected an integer") from None
