"""Device mesh and partition rules: FSDP over 'data', optional tensor parallelism over 'model'.

big_vision trains PaliGemma with FSDP over a `data` mesh axis (docs/paligemma2-facts.md §1.4, §1.8): every
parameter is split along one axis across the data-parallel devices and gathered for its matmul. The
optional `model` axis splits attention heads and the MLP hidden dimension, for models whose single
layer or activations do not fit one device. Rules are keyed on big_vision's parameter names (facts
§1.5), which this project's modules mirror; axes are counted from the end so the same rule holds
with or without the leading scan (layer) axis.

On a TPU pod `jax.make_mesh` orders chips by the physical torus, so one host's chips are spread along
`data` (host 0 of a v5e-256 holds batch rows 0, 1, 16, 17 on a (256, 1) mesh): `process_rows` gives
the rows in whatever order the mesh has and `global_batch` assembles them. Devices that span several
slices (multi-slice over DCN) get a hybrid mesh with `data` outermost across slices. Where no dim of a
parameter divides by all the data devices (SigLIP So400m on 256 chips), the data devices are laid out
as ('data', 'data_minor') and that parameter is split over two of its dims (data_minor_size).
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA, DATA_MINOR, MODEL = "data", "data_minor", "model"
# The share of per-device parameters a minor data axis must save to be used (data_minor_size): below it
# the plain (data, model) mesh, the layout records and grid files name, is kept.
MINOR_AXIS_GAIN = 0.05

# (path regex, axis split over 'model'), first match wins. Shapes without the scan axis:
MODEL_AXIS_RULES: tuple[tuple[str, int], ...] = (
    # (V, D): vocabulary, so the tied logits matmul splits its V output over 'model' (as MaxText's
    # vocab axis) instead of all-reducing partial logits of a width-split table.
    (r"embedder/input_embedding$", -2),
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


def make_mesh(model_parallel: int = 1, devices: Sequence[jax.Device] | None = None,
              data_minor: int = 1) -> Mesh:
    """A (data, model) mesh over `devices` (default: all), with `model_parallel` devices per model group.

    `data_minor` > 1 splits the data devices into ('data', 'data_minor') = (data / data_minor,
    data_minor): the batch goes over both, and a parameter no dim of which divides by all the data devices
    can go over two dims (partition_spec; data_minor_size picks the split). One slice: `jax.make_mesh`,
    which lays the axes along the physical torus. Devices of several TPU slices (their `slice_index`
    differs): a hybrid mesh, each slice holding a contiguous block of `data` and whole model groups, so
    only the data axis' collectives cross the slower DCN.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} must be >= 1 and divide the "
                         f"{len(devices)} devices")
    data = len(devices) // model_parallel
    if data_minor < 1 or data % data_minor:
        raise ValueError(f"data_minor={data_minor} must be >= 1 and divide the data axis ({data})")
    shape, names = _axes(data, model_parallel, data_minor)
    slices = num_slices(devices)
    if slices > 1:
        return hybrid_mesh(model_parallel, devices, slices, data_minor)
    try:
        return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)
    except NotImplementedError:
        # jax.make_mesh splits a physical torus axis only on v5e: on a v4 / v5p 4x4x4 a model axis of 2
        # is no product of physical axis sizes. Splitting one (as MaxText allows) keeps model groups on
        # neighbouring chips.
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def _axes(data: int, model: int, data_minor: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Mesh shape and axis names: (data, model), or (data / data_minor, data_minor, model)."""
    if data_minor > 1:
        return (data // data_minor, data_minor, model), (DATA, DATA_MINOR, MODEL)
    return (data, model), (DATA, MODEL)


def mesh_shape(data: int, model: int, data_minor: int = 1) -> dict[str, int]:
    """{axis name: size} of the mesh make_mesh builds for these sizes, as partition_spec reads it."""
    shape, names = _axes(data, model, data_minor)
    return dict(zip(names, shape))


def num_slices(devices: Sequence[jax.Device]) -> int:
    """How many TPU slices `devices` span (their distinct `slice_index`; 1 on GPUs and CPUs)."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def hybrid_mesh(model_parallel: int, devices: Sequence[jax.Device], slices: int, data_minor: int = 1) -> Mesh:
    """A (data, model) mesh over `slices` slices: (data / slices, model) inside each slice over ICI, times
    (slices, 1) over DCN (jax.experimental.mesh_utils.create_hybrid_device_mesh). A minor data axis
    stays inside each slice."""
    per_slice = len(devices) // slices
    if per_slice * slices != len(devices) or per_slice % model_parallel:
        raise ValueError(f"{len(devices)} devices over {slices} slices: each slice must hold the same number "
                         f"of devices, a multiple of model_parallel={model_parallel}")
    data = per_slice // model_parallel
    if data % data_minor:
        raise ValueError(f"data_minor={data_minor} must divide each slice's data axis ({data})")
    shape, names = _axes(data, model_parallel, data_minor)
    dcn = (slices,) + (1,) * (len(shape) - 1)
    grid = mesh_utils.create_hybrid_device_mesh(shape, dcn, devices, allow_split_physical_axes=True)
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def partition_spec(path: str, shape: Sequence[int], mesh_shape: Mapping[str, int],
                   rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES) -> PartitionSpec:
    """Where one parameter lives: its rule's axis over 'model', its largest other dim that divides by the
    data devices over all of them ('data', or ('data', 'data_minor') on a mesh with a minor data axis).

    An axis that does not divide by the mesh size stays whole (e.g. 4 kv heads on 8 model devices), so
    any config runs on any mesh, at worst with more replication. A parameter the model axis leaves whole
    (no rule, or its axis does not divide) may put both axes on one dim, ('data', 'model'), where that
    dim divides by their product: norms and biases on a 2 x 4 mesh are then split 8 ways, not 2.
    When no dim divides by all the data devices (SigLIP's 1152 / 4304 / 16 heads on 256 of them), a mesh
    with a minor data axis splits two dims instead, 'data' on one and 'data_minor' on another (1152 / 32
    and 4304 / 8 on a 32 x 8 split of 256); what still does not divide stays whole over data, and the
    memory plan (model/cost.py) counts that replication.
    """
    spec: list[str | tuple[str, ...] | None] = [None] * len(shape)
    model_size, data = mesh_shape.get(MODEL, 1), data_size(mesh_shape)
    if model_size > 1:
        for pattern, axis in rules:
            if re.search(pattern, path):
                if len(shape) >= -axis and shape[axis] % model_size == 0:
                    spec[axis] = MODEL
                break
    if data > 1:
        entry = data_entry(mesh_shape)
        free = [i for i in range(len(shape)) if spec[i] is None]
        whole = [i for i in free if shape[i] % data == 0]
        if MODEL not in spec and model_size > 1:
            both = [i for i in whole if shape[i] % (data * model_size) == 0]
            if both:
                spec[max(both, key=lambda i: shape[i])] = (*_names(entry), MODEL)
                return PartitionSpec(*spec)
        if whole:
            spec[max(whole, key=lambda i: shape[i])] = entry
        elif DATA_MINOR in mesh_shape:
            _split_two_dims(spec, shape, free, mesh_shape)
    return PartitionSpec(*spec)


def _split_two_dims(spec: list, shape: Sequence[int], free: list[int], mesh_shape: Mapping[str, int]) -> None:
    """'data' on one free dim and 'data_minor' on another where both divide (the largest such dims), else
    the larger of the two axes alone on the largest dim it divides; nothing when neither divides any."""
    major, minor = mesh_shape[DATA], mesh_shape[DATA_MINOR]
    pairs = [(i, j) for i in free for j in free
             if i != j and shape[i] % major == 0 and shape[j] % minor == 0]
    if pairs:
        i, j = max(pairs, key=lambda p: (shape[p[0]] * shape[p[1]], shape[p[0]]))
        spec[i], spec[j] = DATA, DATA_MINOR
        return
    single = [(size, shape[i], i, name) for name, size in ((DATA, major), (DATA_MINOR, minor))
              for i in free if size > 1 and shape[i] % size == 0]
    if single:
        *_, i, name = max(single)
        spec[i] = name


def data_size(mesh_shape: Mapping[str, int]) -> int:
    """How many ways the batch is split: the product of the data axes."""
    return mesh_shape.get(DATA, 1) * mesh_shape.get(DATA_MINOR, 1)


def data_entry(mesh_shape: Mapping[str, int]) -> str | tuple[str, str]:
    """The PartitionSpec entry that splits one dim over every data device."""
    return (DATA, DATA_MINOR) if DATA_MINOR in mesh_shape else DATA


def _names(entry: str | tuple[str, ...]) -> tuple[str, ...]:
    return (entry,) if isinstance(entry, str) else tuple(entry)


def data_minor_size(params, data: int, model: int = 1,
                    rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES) -> int:
    """The minor data axis for `params` (arrays or ShapeDtypeStructs) on `data` x `model` devices: the
    divisor f of `data` whose (data / f, f, model) mesh leaves the fewest parameter elements per device,
    or 1 (no minor axis) unless that saves at least MINOR_AXIS_GAIN of them. Only a data axis that some
    large dim does not divide gains much: SigLIP So400m on 256 or 512 chips (3B's params are 35x and
    230x what a full split holds on one axis); a few replicated biases are not worth a third axis."""
    def per_device(f: int) -> int:
        axes = mesh_shape(data, model, f)
        return sum(math.prod(shard_shape(shape, spec, axes))
                   for shape, spec in param_specs(params, axes, rules).values())

    single = per_device(1)
    best, best_elements = 1, single
    for f in range(2, data):
        if data % f == 0 and data // f >= f:
            elements = per_device(f)
            if elements < best_elements:
                best, best_elements = f, elements
    return best if best_elements <= (1 - MINOR_AXIS_GAIN) * single else 1


def shard_shape(shape: Sequence[int], spec: PartitionSpec, mesh_shape: Mapping[str, int]) -> tuple[int, ...]:
    """The shape of one device's piece of an array of `shape` laid out by `spec` on a mesh of `mesh_shape`
    (each dim divided by the product of the mesh axes its entry names; None keeps it whole)."""
    out = []
    for i, dim in enumerate(shape):
        entry = spec[i] if i < len(spec) else None
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        out.append(dim // math.prod(mesh_shape[n] for n in names))
    return tuple(out)


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


def param_specs(params, mesh_shape: Mapping[str, int], rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES
                ) -> dict[str, tuple[tuple[int, ...], PartitionSpec]]:
    """{'/'-joined path: (shape, PartitionSpec)} of every leaf of `params` on a mesh of `mesh_shape` sizes:
    what param_shardings places, as plain data (no devices needed; the memory plan reads it)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_path_str(path): (tuple(x.shape), partition_spec(_path_str(path), x.shape, mesh_shape, rules))
            for path, x in leaves}


def shard_params(params, mesh: Mesh, rules: Sequence[tuple[str, int]] = MODEL_AXIS_RULES):
    """`params` placed on `mesh` by the partition rules."""
    return jax.device_put(params, param_shardings(params, mesh, rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch axis (the leading one) split over the data axes, replicated over 'model'."""
    return NamedSharding(mesh, PartitionSpec(data_entry(mesh.shape)))


def replicated(mesh: Mesh) -> NamedSharding:
    """The whole value on every device of `mesh` (scalars, rng keys, step counters)."""
    return NamedSharding(mesh, PartitionSpec())


def local_mesh() -> Mesh:
    """A 1x1 mesh over this process's first device: the default, so single-device callers keep working."""
    return make_mesh(1, devices=jax.local_devices()[:1])


def mesh_from_axes(data: int | None = None, model: int | None = None,
                   devices: Sequence[jax.Device] | None = None, data_minor: int = 1) -> Mesh:
    """A (data, model) mesh from either axis, the other filled in from the device count.

    `data * model` must equal the number of devices: a mesh that leaves devices idle is a mistake in
    the grid file, not something to guess around. `data_minor`: see make_mesh.
    """
    devices = list(jax.devices() if devices is None else devices)
    data, model = axes_for(len(devices), data, model)
    return make_mesh(model, devices=devices, data_minor=data_minor)


def axes_for(n: int, data: int | None = None, model: int | None = None) -> tuple[int, int]:
    """(data, model) covering `n` devices from either axis (see mesh_from_axes), or a one-line error."""
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
    return data, model


def check_batch(batch_size: int, mesh: Mesh, *, where: str = "", fix: str = "") -> int:
    """The global batch size, if it splits evenly over the mesh's 'data' axis; else a one-line error.

    One check for every caller: the grid (`harness.cell.mesh.resolve_mesh`, once per cell) passes what it was
    asked for as `where` and the grid field to change as `fix`; the trainer checks each step's batch.
    """
    data = data_size(mesh.shape)
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
    return {"data": data_size(mesh.shape), "data_minor": int(mesh.shape.get(DATA_MINOR, 1)),
            "model": int(mesh.shape[MODEL]), "devices": int(mesh.size),
            "device_kind": first.device_kind, "processes": len({d.process_index for d in mesh.devices.flat})}


def axis_spec(shape: Sequence[int], mesh: Mesh, axes: Mapping[int, str]) -> PartitionSpec:
    """`axes` {dim: mesh axis} kept where the dim divides by that axis' size, else that dim replicated.
    DATA stands for all the data axes (('data', 'data_minor') on a mesh with a minor data axis)."""
    spec: list[str | tuple[str, ...] | None] = [None] * len(shape)
    for dim, name in axes.items():
        entry, size = (data_entry(mesh.shape), data_size(mesh.shape)) if name == DATA else (name, mesh.shape[name])
        if size > 1 and shape[dim] % size == 0:
            spec[dim] = entry
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


def process_rows(sharding: NamedSharding, global_rows: int,
                 process_index: int | None = None) -> slice | np.ndarray:
    """The rows of a batch this process feeds: those its devices hold under `sharding`, in ascending order.

    On one process, all of them (slice(0, B)). On a multi-host mesh the 'data' axis is split between
    hosts; on a TPU pod the mesh follows the torus, so a host's rows need not be one range (host 0 of a
    v5e-256 on a (256, 1) mesh: 0, 1, 16, 17). Returns a slice when they are contiguous, else the sorted
    int array of them: callers index with either (`batch[rows]`). `global_batch` then assembles the
    global array from each host's rows in this order, without any host seeing the whole batch.
    `process_index` (default: this one) lets a planner ask about any host of a mesh.
    """
    process_index = jax.process_index() if process_index is None else process_index
    shape = (global_rows,)
    rows: set[int] = set()
    for device, index in sharding.devices_indices_map(shape).items():
        if device.process_index == process_index:
            rows.update(range(*index[0].indices(global_rows)))
    if not rows:
        raise ValueError(f"process {process_index} holds no device of this mesh")
    ordered = np.fromiter(sorted(rows), dtype=np.int64, count=len(rows))
    if ordered[-1] - ordered[0] + 1 == len(ordered):
        return slice(int(ordered[0]), int(ordered[-1]) + 1)
    return ordered


def global_batch(local: Any, sharding: NamedSharding, global_rows: int) -> Any:
    """This process's rows (`batch[process_rows(...)]`, a host array or a dict of them) -> global arrays
    of `global_rows` rows laid out by `sharding`.

    jax.make_array_from_process_local_data maps the shards a process holds, sorted by their first global
    row, onto consecutive blocks of the local rows; `process_rows` lists rows in that same ascending
    order, so any row order a mesh gives (contiguous or spread along the torus) assembles correctly.
    Call it with the same `global_rows` on every process, once per step.
    """
    def one(value):
        value = np.asarray(value)
        return jax.make_array_from_process_local_data(sharding, value, (global_rows,) + value.shape[1:])
    return {k: one(v) for k, v in local.items()} if isinstance(local, Mapping) else one(local)


def put_batch(batch: Mapping[str, Any], sharding: NamedSharding, global_rows: int | None = None) -> dict:
    """A batch of host arrays -> global arrays under `sharding` (its leading axis over 'data').

    `batch` holds this process's rows (`process_rows`); on one process that is the whole batch. Without
    `global_rows` the global size is inferred (each process holding an equal share).
    """
    if global_rows is not None:
        return global_batch(batch, sharding, global_rows)
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in batch.items()}


# Seconds without a heartbeat after which jax.distributed declares a process dead and ends every other
# process of the job (JAX's default is 100); PALIGEMMA_TRANSFER_HEARTBEAT_S overrides it.
HEARTBEAT_S = 30


def detected_cluster() -> Any:
    """The cluster JAX's own detection finds (jax._src.clusters: a Cloud TPU VM pod through its metadata
    server, GKE TPU, SLURM, Open MPI, Kubernetes), or None. jax.distributed.initialize() runs the same
    detection; asking first lets a single host skip it. JAX offers no public call for this, so the
    private registry is read, and any change to it reads as no cluster."""
    try:
        from jax._src.clusters import ClusterEnv

        types = list(ClusterEnv._cluster_types)
    except (ImportError, AttributeError):
        return None
    for env in types:
        try:
            if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
                return env
        except Exception:  # noqa: BLE001 - a probe that cannot run (no metadata server) finds nothing
            continue
    return None


def initialize_distributed() -> bool:
    """Join a multi-host job when the environment describes one; on one host, do nothing.

    Recognised: JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID), else whatever JAX's cluster
    detection finds with more than one process (Cloud TPU VM pods, GKE, SLURM with more than one task,
    Open MPI with more than one rank); JAX fills in what these do not give. A process that dies is
    noticed within HEARTBEAT_S and ends the others. Returns whether it initialised.
    """
    env = os.environ
    explicit = "JAX_COORDINATOR_ADDRESS" in env
    if not explicit:
        cluster = detected_cluster()
        if cluster is None:
            return False
        try:
            if cluster.get_process_count() <= 1:
                return False
        except Exception:  # noqa: BLE001 - let jax.distributed.initialize say what is missing
            pass
    kwargs: dict[str, Any] = {}
    if explicit:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
        for name, key in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
            if key in env:
                kwargs[name] = _env_int(key, 0)
    if "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
        kwargs["heartbeat_timeout_seconds"] = _env_int("PALIGEMMA_TRANSFER_HEARTBEAT_S", HEARTBEAT_S)
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
