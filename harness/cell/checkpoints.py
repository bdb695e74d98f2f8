"""A cell's resumable checkpoints (params, optimizer state, step) with orbax, verified before they are used.

Orbax writes each checkpoint into a temp folder and renames it into place, so a killed write never leaves
a half checkpoint under its step's name. That does not protect against bytes damaged later (a disk, a copy,
a person): orbax's data files carry no checksum, and a checkpoint with 4 KiB overwritten inside a data
file restores without complaint and trains into NaN. So once a save has finished, the sha256 of every
file it wrote goes into MANIFEST in the step's folder (temp file + rename), and a resume first checks the
files against it. A checkpoint that fails the check or cannot be read is moved aside to
ckpt.corrupt-<UTC time> (never deleted) and the cell trains again from its base params.

Multi-host: every process writes its own shards (orbax), each hashes an equal share of the files, and
process 0 writes the manifest; on resume each checks its share and all act on the same verdict
(harness/cell/hosts.py), so no process restores a checkpoint another one set aside.

Paths go through etils.epath, so `gs://bucket/run/cells/x/ckpt` reaches orbax as the bucket path it is
(`pathlib.Path` would turn it into `gs:/bucket/...`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import jax
import numpy as np
from etils import epath

from harness.cell import hosts
from model import sharding

MANIFEST = "manifest.sha256.json"
# cells/<id>/: the kept params of a multi-host cell, each process's shards (harness/cell/run_cell.py)
SHARDED_PARAMS = "params"
_BLOCK = 1 << 20


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute (orbax needs one), or a URI such as gs://bucket/x kept whole."""
    name = os.fspath(path)
    return epath.Path(name if "://" in name else os.path.abspath(name))


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Mute logging while orbax or TensorStore works: a failed save or restore logs the same error from
    orbax's finalize thread, from asyncio ('exception was never retrieved') and from absl, hundreds of
    lines in all; the caller reports it once."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def one_line(error: BaseException, limit: int = 300) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:limit]


def _os_error(error: BaseException) -> OSError | None:
    """The OSError (no space left, permission denied) at the root of a library's wrapped error, if any."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        stack.extend(getattr(e, "exceptions", ()))
    return None


def _digest(path: epath.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_BLOCK), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(step_dir: epath.Path) -> list[str]:
    names = []
    for folder, _, files in step_dir.walk():
        names += [str((folder / f).relative_to(step_dir)) for f in files if f != MANIFEST]
    return sorted(names)


def _digests(step_dir: epath.Path, names: list[str]) -> dict[str, str]:
    """sha256 of `names` in `step_dir`, each process hashing every n-th file; the merged map on all."""
    mine = {name: _digest(step_dir / name)
            for name in names[jax.process_index()::jax.process_count()]}
    merged: dict[str, str] = {}
    for part in hosts.gather_json(mine):
        merged.update(part)
    return merged


class Checkpoints:
    """Orbax manager for (params, opt_state, step): synchronous saves, each followed by its manifest."""

    def __init__(self, directory: str | os.PathLike, every: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        self.directory = as_path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def verify(self, step: int) -> str | None:
        """None when the step's files match its manifest, else what is wrong. A checkpoint written before
        manifests existed (no MANIFEST) is not checked; orbax's own read still has to succeed."""
        step_dir = self.directory / str(step)
        try:
            expected = json.loads((step_dir / MANIFEST).read_text()) if jax.process_index() == 0 else None
        except FileNotFoundError:
            expected = None
        except (OSError, ValueError) as e:
            expected = {"?": f"unreadable manifest ({one_line(e, 100)})"}
        expected = hosts.broadcast_json(expected)
        if expected is None:
            return None
        names = sorted(expected)
        try:
            actual = _digests(step_dir, [n for n in names if (step_dir / n).is_file()])
        except OSError as e:
            return f"{MANIFEST}: {one_line(e, 200)}"
        missing = [n for n in names if n not in actual]
        changed = [n for n in names if n in actual and actual[n] != expected[n]]
        if missing or changed:
            what = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
                   ([f"sha256 differs for {', '.join(changed[:3])}"] if changed else [])
            return f"{MANIFEST} check failed: {'; '.join(what)}"
        return None

    def restore(self, like: dict, shardings: dict | None = None) -> dict | None:
        """The latest checkpoint, or None. With `shardings` (a tree like `like`) every array is read
        straight into its place on the current mesh, whatever mesh wrote it: orbax reads each device's
        slice from the stored array."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
        if shardings is not None:
            abstract = sharding.with_shardings(abstract, shardings)
        return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def save(self, step: int, state: dict) -> None:
        """Write the step and wait for it, then its manifest. Any failure of the write (orbax's worker
        threads included) surfaces here as one OSError or RuntimeError line; the previous checkpoint is
        intact, because orbax only renames a finished write into place."""
        try:
            with quiet_libraries():
                self.manager.save(step, args=self._ocp.args.StandardSave(state))
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - summarised in one line below
            raise self._write_error(step, e) from None
        try:
            self._write_manifest(step)
        except OSError as e:
            raise self._write_error(step, e) from None

    def _write_error(self, step: int, error: BaseException) -> Exception:
        cause = _os_error(error)
        where = f"checkpoint step {step} in {self.directory} was not written"
        if cause is not None:
            return OSError(cause.errno, f"{where} ({cause.strerror or os.strerror(cause.errno)}); the cell "
                                        "resumes from its previous checkpoint when run again")
        return RuntimeError(f"{where}: {one_line(error)}")

    def _write_manifest(self, step: int) -> None:
        step_dir = self.directory / str(step)
        digests = _digests(step_dir, _files(step_dir))
        if jax.process_index() == 0:
            tmp = step_dir / f".{MANIFEST}.tmp"
            tmp.write_text(json.dumps(digests, indent=0, sort_keys=True))
            tmp.rename(step_dir / MANIFEST)
        hosts.barrier(f"manifest {self.directory} {step}")

    def close(self) -> None:
        with quiet_libraries():
            self.manager.wait_until_finished()
            self.manager.close()


def open_checkpoints(directory: str | os.PathLike, every: int, like: dict,
                     shardings: dict | None = None) -> tuple[Checkpoints, dict | None]:
    """The cell's checkpoints and the state restored from the latest one (None: start from the base).

    A checkpoint that fails its manifest or cannot be read (bytes overwritten, files missing, from an
    incompatible run) is named in one line on stderr and moved aside to ckpt.corrupt-<UTC time>, never
    deleted, and training starts again from the base params: a bad checkpoint costs the steps it held,
    not the cell. Every process of a multi-host job reaches the same verdict; process 0 moves it.
    """
    directory = as_path(directory)
    ckpt: Checkpoints | None = None
    restored = None
    problem: str | None
    try:
        with quiet_libraries():
            ckpt = Checkpoints(directory, every)
            step = ckpt.latest_step()
            problem = ckpt.verify(step) if step is not None else None
            if problem is None and step is not None:
                restored = ckpt.restore(like, shardings)
    except Exception as e:  # noqa: BLE001 - any failure to read means the checkpoint is unusable
        problem = one_line(e)
    problem = hosts.first_problem(problem)
    if problem is None and ckpt is not None:
        return ckpt, restored
    if ckpt is not None:
        try:
            with quiet_libraries():
                ckpt.manager.close()
        except Exception:  # noqa: BLE001 - closing a manager over unreadable files may fail too
            pass
    restored = None
    aside = directory.parent / f"{directory.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    aside = epath.Path(hosts.broadcast_json(os.fspath(aside)))
    if jax.process_index() == 0:
        directory.rename(aside)
        print(f"{directory}: unreadable checkpoint ({problem}); moved aside to {aside.name}, training "
              "restarts from the base checkpoint", file=sys.stderr)
    hosts.barrier(f"set aside {directory}")
    return Checkpoints(directory, every), None
