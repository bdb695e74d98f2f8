"""What the scheduler needs to run one grid from every process of a multi-host job.

Every process runs the same `paligemma-transfer run`: each cell's jitted steps span all hosts' devices,
so all processes must run the same cells in the same order. Process 0 decides (which cells are left,
whether it got a cell's lock) and broadcasts its decision; every process then runs the cell; only
process 0 writes (records, predictions, best_lr.json, tables, the cell lock). The others follow its
decisions instead of reading the workdir themselves, so they never race it on a shared filesystem.

Any failure on any process ends the job (docs/scale.md): the process that failed records it in the
cell's error.txt, naming itself, and exits at once instead of moving on to a collective the others will
not reach; the others learn it from their next collective (the connection to it closes) or from
jax.distributed's missing heartbeats, and exit too. The rerun resumes.

On one process every function here is a no-op that needs no jax backend (a Ray driver must not grab
the accelerators its workers need).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def multi_host() -> bool:
    """Whether this process joined a multi-host job (model.sharding.initialize_distributed)."""
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def is_primary() -> bool:
    """Process 0 of a multi-host job, or the only process."""
    if not multi_host():
        return True
    import jax

    return jax.process_index() == 0


def agree(flags: Sequence[bool]) -> list[bool]:
    """Process 0's `flags` on every process (the others' own values are ignored)."""
    if not multi_host():
        return list(flags)
    from jax.experimental import multihost_utils

    return [bool(x) for x in multihost_utils.broadcast_one_to_all(np.asarray(flags, dtype=np.int32))]


def barrier(name: str) -> None:
    """Wait until every process gets here (e.g. before reading files process 0 has written)."""
    if multi_host():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_json(value: Any) -> Any:
    """Process 0's `value` (JSON data) on every process: decisions such as the lrs the sweep chose are
    made once, not re-derived on each host from files a shared filesystem may show them differently."""
    if not multi_host():
        return value
    from harness.cell.hosts import broadcast_json as broadcast

    return broadcast(value)


def describe() -> str:
    """'process 1 of 2 (host h, pid p)' in a multi-host job, '' on one process."""
    if not multi_host():
        return ""
    from harness.cell.hosts import describe as this_process

    return this_process()


class FollowerLock:
    """Stands in for the cell lock on processes other than 0: process 0 holds the real one."""

    def release(self) -> None:
        pass
