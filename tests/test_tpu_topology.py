"""TPU pods without TPUs: meshes over fake device objects laid out as Cloud TPU slices are, as JAX's own
tests/mesh_utils_test.py builds them (objects with `coords`, `core_on_chip`, `process_index`,
`platform`, `device_kind`, `slice_index`; 2 x 2 chips per host).

On such a mesh `jax.make_mesh` follows the torus, so a host's chips are spread along `data`. Checked
here, for v4-32, v5e-16, v5e-256, v5p-128, two v5e-256 slices, and every mesh `auto` picks for the
paper grid: each host's rows (model.sharding.process_rows) are exactly the rows its devices hold (read
off the mesh's device grid, not from the sharding), the hosts' rows partition the batch, and the memory
plan's params per device equal the sum of every parameter's shard shape as JAX computes it
(NamedSharding.shard_shape) under the partition rules.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from jax.sharding import NamedSharding, PartitionSpec

from model import sharding
from model.config import config_for
from model.cost import memory_plan, plan_mesh
from model.paligemma import param_shapes

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class FakeTpu:
    """What jax.make_mesh and mesh_utils read of a TPU device."""

    id: int
    platform: str
    device_kind: str
    process_index: int
    coords: tuple[int, int, int]
    core_on_chip: int = 0
    slice_index: int = 0


def tpu_slice(x: int, y: int, z: int, kind: str, slices: int = 1) -> list[FakeTpu]:
    """Chips of an x * y * z torus (times `slices` slices), one device per chip, each host owning a 2 x 2
    block of chips in one z plane, hosts numbered x fastest, then y, z and slice, as Cloud TPU does."""
    hx, hy = min(x, 2), min(y, 2)  # chips per host along x and y
    px, py = x // hx, y // hy  # hosts along x and y
    devices = []
    for s, cz, cy, cx in itertools.product(range(slices), range(z), range(y), range(x)):
        host = cx // hx + px * (cy // hy + py * (cz + z * s))
        devices.append(FakeTpu(id=len(devices), platform="tpu", device_kind=kind, process_index=host,
                               coords=(cx, cy, cz), slice_index=s))
    return devices


TOPOLOGIES = {
    "v4-32": lambda: tpu_slice(2, 2, 4, "TPU v4"),  # 16 chips (32 cores, one device per megacore chip)
    "v5e-16": lambda: tpu_slice(4, 4, 1, "TPU v5 lite"),
    "v5e-256": lambda: tpu_slice(16, 16, 1, "TPU v5 lite"),
    "v5p-128": lambda: tpu_slice(4, 4, 4, "TPU v5"),  # 64 chips
    "2 x v5e-256": lambda: tpu_slice(16, 16, 1, "TPU v5 lite", slices=2),
}
PLAN_DEVICE = {"TPU v4": "tpu-v4", "TPU v5 lite": "tpu-v5e", "TPU v5": "tpu-v5p"}


def rows_by_host(mesh, batch: int) -> dict[int, set[int]]:
    """Every host's batch rows, read off the mesh's device grid: data position i holds rows
    [i * batch / data, (i + 1) * batch / data), whatever the model position. With a minor data axis the
    data position counts over (data, data_minor), data outermost."""
    grid = mesh.devices.reshape(-1, mesh.devices.shape[-1])  # (data positions, model)
    per = batch // grid.shape[0]
    rows: dict[int, set[int]] = {}
    for (i, _), device in np.ndenumerate(grid):
        rows.setdefault(device.process_index, set()).update(range(i * per, (i + 1) * per))
    return rows


def check_rows(mesh, batch: int) -> dict[int, np.ndarray]:
    """process_rows for every host against the device grid; the hosts' rows partition range(batch)."""
    expected = rows_by_host(mesh, batch)
    spec = sharding.batch_sharding(mesh)
    got = {}
    for host in sorted(expected):
        rows = sharding.process_rows(spec, batch, process_index=host)
        got[host] = np.arange(batch)[rows]
        assert list(got[host]) == sorted(expected[host]), host
    # Hosts that share a data position (a model group spanning hosts) feed the same rows; the distinct
    # row sets partition the batch.
    distinct = {tuple(r) for r in got.values()}
    flat = sorted(itertools.chain.from_iterable(distinct))
    assert flat == list(range(batch))
    return got


def test_host_zero_of_a_v5e_256_holds_rows_spread_along_the_torus():
    mesh = sharding.make_mesh(1, devices=TOPOLOGIES["v5e-256"]())
    assert mesh.devices.shape == (256, 1)
    rows = check_rows(mesh, 256)
    assert list(rows[0]) == [0, 1, 16, 17]
    assert isinstance(sharding.process_rows(sharding.batch_sharding(mesh), 256, process_index=0), np.ndarray)
    assert len(rows) == 64 and all(len(r) == 4 for r in rows.values())


@pytest.mark.parametrize("name", list(TOPOLOGIES))
@pytest.mark.parametrize("model_parallel", [1, 2, 4])
def test_every_host_feeds_exactly_the_rows_its_devices_hold(name, model_parallel):
    devices = TOPOLOGIES[name]()
    mesh = sharding.make_mesh(model_parallel, devices=devices)
    assert mesh.devices.size == len(devices) and mesh.devices.shape[1] == model_parallel
    for batch in (mesh.devices.shape[0], 4 * mesh.devices.shape[0]):
        check_rows(mesh, batch)


def test_one_process_feeds_one_contiguous_range():
    mesh = sharding.make_mesh(1, devices=tpu_slice(2, 2, 1, "TPU v5 lite"))  # one host, four chips
    assert sharding.process_rows(sharding.batch_sharding(mesh), 8, process_index=0) == slice(0, 8)


def test_two_slices_make_a_hybrid_mesh_with_data_outermost_across_slices():
    devices = TOPOLOGIES["2 x v5e-256"]()
    assert sharding.num_slices(devices) == 2
    mesh = sharding.make_mesh(4, devices=devices)
    assert mesh.devices.shape == (128, 4) and mesh.axis_names == (sharding.DATA, sharding.MODEL)
    slice_of = np.vectorize(lambda d: d.slice_index)(mesh.devices)
    assert (slice_of[:64] == 0).all() and (slice_of[64:] == 1).all()  # a model group never crosses DCN
    with pytest.raises(ValueError, match="each slice must hold the same number"):
        sharding.hybrid_mesh(3, devices, 2)


def _paper_cells() -> list[tuple[str, int, int]]:
    """(config, batch_size, text_len) of every (task, size, resolution) of configs/grids/paper.yaml."""
    from tasks.registry import get_task

    grid = yaml.safe_load((REPO / "configs" / "grids" / "paper.yaml").read_text())
    cells = set()
    for task, size, res in itertools.product(grid["tasks"], grid["sizes"], grid["resolutions"]):
        recipe = get_task(task).recipe(size, res)
        cells.add((f"{size}-{res}", recipe.batch_size, recipe.text_len))
    return sorted(cells)


def _state_elements_by_jax(mesh, config) -> int:
    """Elements per device of the params as JAX lays them out under the rules (its own shard shapes)."""
    specs = sharding.param_specs(param_shapes(config), dict(mesh.shape))
    return sum(math.prod(NamedSharding(mesh, spec).shard_shape(shape)) for shape, spec in specs.values())


@pytest.mark.parametrize("name", ["v4-32", "v5e-256", "v5p-128", "2 x v5e-256"])
def test_every_mesh_auto_picks_for_the_paper_grid_feeds_and_is_counted_exactly(name):
    devices = TOPOLOGIES[name]()
    device = PLAN_DEVICE[devices[0].device_kind]
    meshes, fitted = {}, 0
    for config_name, batch, text_len in _paper_cells():
        config = config_for(*config_name.split("-")[:1], int(config_name.split("-")[1]))
        try:
            plan = plan_mesh(config, text_len=text_len, batch_size=batch, device=device,
                             num_devices=len(devices), remat=True, compute_dtype="bfloat16")
        except ValueError:
            continue  # needs more chips than this pod has: the plan says so in one line
        fitted += 1
        key = plan.model_parallel, plan.data_minor
        if key not in meshes:
            meshes[key] = sharding.make_mesh(plan.model_parallel, devices=devices, data_minor=plan.data_minor)
        mesh = meshes[key]
        info = sharding.mesh_info(mesh)
        assert plan.mesh == f"{info['data']}x{info['model']}" and info["data_minor"] == plan.data_minor
        check_rows(mesh, batch)
        assert plan.params_bytes == 4 * _state_elements_by_jax(mesh, config), (config_name, plan.mesh)
    assert fitted, f"no paper cell fits {name}"


def test_a_minor_data_axis_splits_what_one_data_axis_leaves_whole():
    """3b-896 on a v5e-256: on one data axis of 256 the rules cannot split SigLIP (1152, 4304 and 16 heads
    do not divide by 256), 6.3 GiB of state per chip. The plan builds the 256 x 1 mesh with a minor data
    axis instead (32 x 8): SigLIP's kernels go over two dims, and the state is the fully split 0.18 GiB."""
    config = config_for("3b", 896)
    single = sharding.param_specs(param_shapes(config), {sharding.DATA: 256, sharding.MODEL: 1})
    one_axis = sum(math.prod(sharding.shard_shape(s, spec, {sharding.DATA: 256, sharding.MODEL: 1}))
                   for s, spec in single.values())
    assert 6.2 < 16 * one_axis / 2**30 < 6.4  # params + grads + Adam's two moments, float32
    plan = memory_plan(config, 32, 256, "tpu-v5e", 256, remat=True, compute_dtype="bfloat16")
    assert plan.data_minor == 8 and plan.mesh == "256x1" and plan.fits
    assert (plan.params_bytes + plan.grads_bytes + plan.opt_bytes) / 2**30 < 0.2
    mesh = sharding.make_mesh(1, devices=TOPOLOGIES["v5e-256"](), data_minor=plan.data_minor)
    assert dict(mesh.shape) == {sharding.DATA: 32, sharding.DATA_MINOR: 8, sharding.MODEL: 1}
    assert plan.params_bytes == 4 * _state_elements_by_jax(mesh, config)
    dense0 = "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"
    assert sharding.param_specs(param_shapes(config), dict(mesh.shape))[dense0][1] == \
        PartitionSpec(None, sharding.DATA, sharding.DATA_MINOR)
    auto = plan_mesh(config, text_len=32, batch_size=256, device="tpu-v5e", num_devices=256, remat=True,
                     compute_dtype="bfloat16")
    assert auto.mesh == "256x1" and auto.data_minor == 8
