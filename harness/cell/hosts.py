"""What the processes of a multi-host job tell each other: small JSON values, gathered or broadcast.

A multi-host cell spans every process's devices, so whatever could make processes take different paths
(is this checkpoint readable? which lr won the sweep? did any process fail?) is decided once and shared:
process 0 decides and broadcasts, or every process contributes and all read the same gathered list.
On one process every function here returns at once and needs no collective.

The values travel as UTF-8 JSON bytes through jax.experimental.multihost_utils (a collective over all
processes), so every process must call the same functions in the same order.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import jax
import numpy as np


def multi_process() -> bool:
    return jax.process_count() > 1


def describe() -> str:
    """This process as an error message names it: 'process 1 of 2 (host worker-1, pid 4242)'."""
    return (f"process {jax.process_index()} of {jax.process_count()} "
            f"(host {socket.gethostname()}, pid {os.getpid()})")


def gather_json(value: Any) -> list[Any]:
    """Every process's `value`, in process order, on every process."""
    if not multi_process():
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [json.loads(bytes(rows[i, :int(sizes[i])]).decode()) for i in range(len(sizes))]


def broadcast_json(value: Any) -> Any:
    """Process 0's `value` on every process (the others' own values are ignored)."""
    if not multi_process():
        return value
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    size = int(np.asarray(multihost_utils.broadcast_one_to_all(np.asarray([data.size], np.int32)))[0])
    padded = np.zeros(size, np.uint8)
    padded[:min(size, data.size)] = data[:size]
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(padded))).decode())


def first_problem(problem: str | None) -> str | None:
    """The first process's problem (its description prefixed with the process), or None when no process
    has one: every process gets the same answer, so all take the same path."""
    for index, found in enumerate(gather_json(problem)):
        if found is not None:
            return found if not multi_process() else f"process {index}: {found}"
    return None


def barrier(name: str) -> None:
    """Wait until every process gets here (e.g. before reading what process 0 has just written)."""
    if multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
