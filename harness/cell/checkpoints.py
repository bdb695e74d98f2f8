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
(harness/cell/hosts.py), so no process restores a checkpoint another one set aside. A host may see the
checkpoint differently from the others (a stale NFS cache, a disk error on that host only), so what can
fail on one host alone (opening the folder and listing the steps, hashing its share, the orbax read)
runs with no collective inside it and is followed by an agreement every process reaches: a process
whose read failed never skips a collective the others are in (which would hang them, or pair the wrong
collectives and abort).

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
from collections.abc import Callable, Iterator
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
    """Orbax manager for (params, opt_state, step): synchronous saves, each followed by its manifest.

    Creating it waits for no other process, so that opening the folder can fail on one host alone and
    still reach the agreement after it (open_checkpoints). Orbax's own creation has two barriers: one
    after process 0 creates the folder (`create=True`) and one after the root metadata is written
    (`save_root_metadata`, a barrier even with no metadata to write). A process whose listing of the
    folder failed before them would sit in the agreement while the others sit in orbax's barrier. So the
    folder must exist already (open_checkpoints makes it on every process, mkdir being harmless where it
    exists) and neither option is on: nothing here writes root metadata."""

    def __init__(self, directory: str | os.PathLike, every: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        self.directory = as_path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=False, save_root_metadata=False))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def verify(self, step: int) -> str | None:
        """None when the step's files, as this process sees them, match the manifest, else what is wrong.
        A checkpoint written before manifests existed (no MANIFEST) is not checked; orbax's own read still
        has to succeed.

        Each process hashes its share of the files and reports only its own findings, so the verdict
        (open_checkpoints) names the host whose view is bad. The one collective here, process 0's
        manifest to every process, is reached whatever fails: every read is local and caught."""
        step_dir = self.directory / str(step)
        manifest: dict | None = None
        unreadable: str | None = None
        if jax.process_index() == 0:
            try:
                manifest = json.loads((step_dir / MANIFEST).read_text())
                if not isinstance(manifest, dict):
                    raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
            except FileNotFoundError:
                manifest = None
            except Exception as e:  # noqa: BLE001 - an unreadable manifest is process 0's finding
                manifest, unreadable = None, f"unreadable {MANIFEST} ({one_line(e, 100)})"
        shared = hosts.broadcast_json({"manifest": manifest, "unreadable": unreadable is not None})
        if shared["unreadable"]:
            return unreadable  # process 0's problem; the others have none of their own
        expected = shared["manifest"]
        if expected is None:
            return None
        names = sorted(expected)
        try:
            missing = [n for n in names if not (step_dir / n).is_file()]
            mine = [n for n in names[jax.process_index()::jax.process_count()] if n not in missing]
            changed = [n for n in mine if _digest(step_dir / n) != expected[n]]
        except Exception as e:  # noqa: BLE001 - a read error on this host is this host's finding
            return f"{MANIFEST} check could not read a file: {one_line(e, 200)}"
        if missing or changed:
            what = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
                   ([f"sha256 differs for {', '.join(changed[:3])}"] if changed else [])
            return f"{MANIFEST} check failed: {'; '.join(what)}"
        return None

    def restore(self, like: dict, shardings: dict | None = None, step: int | None = None) -> dict | None:
        """Step `step` (default: the latest), or None when there is none. With `shardings` (a tree like
        `like`) every array is read straight into its place on the current mesh, whatever mesh wrote it:
        orbax reads each device's slice from the stored array.

        The step's item folder is read by its handler, not by CheckpointManager.restore: the manager's
        read ends in a barrier (a collective) that a process whose read failed never reaches, while it
        enters the next collective itself. The handler's read has no collective; the verdict after it
        (open_checkpoints) is where the processes meet."""
        from orbax.checkpoint.checkpoint_manager import DEFAULT_ITEM_NAME

        step = self.manager.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
        if shardings is not None:
            abstract = sharding.with_shardings(abstract, shardings)
        handler = self._ocp.StandardCheckpointHandler()
        try:
            return handler.restore(self.directory / str(step) / DEFAULT_ITEM_NAME,
                                   args=self._ocp.args.StandardRestore(abstract))
        finally:
            handler.close()

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


def _open(directory: epath.Path, every: int) -> Checkpoints:
    """The folder made where this process does not see it yet, then its manager: no collective in
    either (Checkpoints), so a failure of either on one host still reaches the agreement after it."""
    directory.mkdir(parents=True, exist_ok=True)
    return Checkpoints(directory, every)


def _agreed(work: Callable[[], str | None]) -> str | None:
    """`work()`'s problem on this process (an exception is one too), then the first process's problem
    on every process (hosts.first_problem): a failure on one host alone still reaches the agreement the
    others wait in, and all take the same path after it. `work` must make no collective that it could
    skip on one process by failing before it."""
    try:
        with quiet_libraries():
            problem = work()
    except Exception as e:  # noqa: BLE001 - any failure to read means the checkpoint is unusable
        problem = one_line(e)
    return hosts.first_problem(problem)


def open_checkpoints(directory: str | os.PathLike, every: int, like: dict,
                     shardings: dict | None = None) -> tuple[Checkpoints, dict | None]:
    """The cell's checkpoints and the state restored from the latest one (None: start from the base).

    A checkpoint that fails its manifest or cannot be read (bytes overwritten, files missing, from an
    incompatible run) is named in one line on stderr and moved aside to ckpt.corrupt-<UTC time>, never
    deleted, and training starts again from the base params: a bad checkpoint costs the steps it held,
    not the cell. Every process of a multi-host job reaches the same verdict, after each stage (open and
    list the steps, check the manifest, read) in turn, and the line names the process that saw the
    problem first ('process 1: ...'); process 0 moves it. A process that lists another latest step than
    process 0 (a stale directory listing) has a problem too: it would read a different checkpoint.
    """
    directory = as_path(directory)
    opened: list[Checkpoints] = []
    step: int | None = None
    restored: list[dict | None] = []

    def open_latest() -> None:
        nonlocal step
        opened.append(_open(directory, every))
        step = opened[0].latest_step()

    problem = _agreed(open_latest)
    if problem is None:
        first = hosts.broadcast_json(step)
        problem = hosts.first_problem(
            None if step == first else f"its latest checkpoint step is {step}, process 0's is {first}")
    if problem is None and step is not None:
        problem = _agreed(lambda: opened[0].verify(step))
    if problem is None and step is not None:
        problem = _agreed(lambda: restored.append(opened[0].restore(like, shardings, step)))
    if problem is None:
        return opened[0], restored[0] if restored else None
    ckpt = opened[0] if opened else None
    if ckpt is not None:
        try:
            with quiet_libraries():
                ckpt.manager.close()
        except Exception:  # noqa: BLE001 - closing a manager over unreadable files may fail too
            pass
    aside = directory.parent / f"{directory.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    aside = epath.Path(hosts.broadcast_json(os.fspath(aside)))
    if jax.process_index() == 0:
        directory.rename(aside)
        print(f"{directory}: unreadable checkpoint ({problem}); moved aside to {aside.name}, training "
              "restarts from the base checkpoint", file=sys.stderr)
    hosts.barrier(f"set aside {directory}")
    fresh: list[Checkpoints] = []
    problem = _agreed(lambda: fresh.append(_open(directory, every)))
    if problem is not None:  # every process raises: none trains on while another has failed
        raise OSError(f"{directory}: no new checkpoint folder after setting the old one aside ({problem})")
    return fresh[0], None
