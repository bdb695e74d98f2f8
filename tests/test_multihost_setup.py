"""How a job finds its hosts and how hosts share a workdir: JAX's own cluster detection (a Cloud TPU VM
pod is found through the metadata server, not only GKE's TPU_WORKER_HOSTNAMES), a heartbeat timeout that
ends the job when a host dies, cell locks with a lease that a restarted pod's locks cannot outlive, and
temp names no two hosts share."""

from __future__ import annotations

import inspect
import json
import os
import socket
import time

import jax
import pytest

from harness.run import locks
from harness.run.demo_data import unique_suffix
from harness.run.locks import CellLock
from model import sharding


class _FakeCluster:
    name = "fakegce"
    opt_in_only_method = False
    processes = 4

    @classmethod
    def is_env_present(cls) -> bool:
        return True

    @classmethod
    def get_process_count(cls) -> int:
        return cls.processes


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def initialize(**kw):
        seen.append(kw)

    initialize.__signature__ = inspect.signature(jax.distributed.initialize)  # the installed jax's parameters
    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "PALIGEMMA_TRANSFER_HEARTBEAT_S"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_a_cluster_jax_detects_is_joined_with_jaxs_own_detection(monkeypatch, calls):
    from jax._src.clusters import ClusterEnv

    monkeypatch.setattr(ClusterEnv, "_cluster_types", [_FakeCluster])
    assert sharding.detected_cluster() is _FakeCluster
    assert sharding.initialize_distributed()
    # No coordinator, count or id passed: jax.distributed.initialize() detects them as it does on a pod.
    assert calls == [{"heartbeat_timeout_seconds": sharding.HEARTBEAT_S}]


def test_a_single_process_cluster_and_no_cluster_stay_single_host(monkeypatch, calls):
    from jax._src.clusters import ClusterEnv

    monkeypatch.setattr(_FakeCluster, "processes", 1)
    monkeypatch.setattr(ClusterEnv, "_cluster_types", [_FakeCluster])
    assert not sharding.initialize_distributed()
    monkeypatch.setattr(ClusterEnv, "_cluster_types", [])
    assert sharding.detected_cluster() is None and not sharding.initialize_distributed()
    assert calls == []


def test_an_explicit_coordinator_passes_its_values_and_the_heartbeat(monkeypatch, calls):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv("PALIGEMMA_TRANSFER_HEARTBEAT_S", "7")
    assert sharding.initialize_distributed()
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1,
                      "heartbeat_timeout_seconds": 7}]


def _foreign_lock(path, age_s: float, host: str = "vm-that-was-replaced", pid: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "t", "boot": "b"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_a_lock_from_another_host_is_live_within_its_lease_and_stale_after(tmp_path):
    path = tmp_path / "cell" / "lock"
    _foreign_lock(path, age_s=10)
    assert not CellLock(path).acquire()  # its holder renewed the heartbeat recently
    _foreign_lock(path, age_s=locks.LEASE_S + 60)
    lock = CellLock(path)
    assert lock.acquire() and json.loads(path.read_text())["host"] == socket.gethostname()
    lock.release()
    assert not path.exists()


def test_a_lock_of_this_host_from_before_its_last_boot_is_stale(tmp_path, monkeypatch):
    path = tmp_path / "cell" / "lock"
    _foreign_lock(path, age_s=0, host=socket.gethostname(), pid=os.getppid())  # pid exists now
    monkeypatch.setattr(locks, "boot_id", lambda: "this-boot")
    assert CellLock(path).acquire()


def test_the_holder_renews_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "LEASE_S", 0.4)
    lock = CellLock(tmp_path / "lock")
    assert lock.acquire()
    first = (tmp_path / "lock").stat().st_mtime_ns
    time.sleep(0.5)
    assert (tmp_path / "lock").stat().st_mtime_ns > first
    lock.release()


def test_temp_names_carry_host_pid_and_a_random_token():
    a, b = unique_suffix(), unique_suffix()
    assert a != b and a.startswith(f"{socket.gethostname()}-{os.getpid()}-")
