"""Workdir paths that are either local folders or object-store URLs (gs://bucket/run, s3://...).

A local path stays a `pathlib.Path` and keeps every POSIX guarantee the project relies on (temp file +
os.replace, O_CREAT | O_EXCL, appends). A URL becomes an `etils.epath.Path`, whose fsspec backend (or
tf.io.gfile where TensorFlow is installed) reaches the bucket directly: `pathlib.Path("gs://b/x")`
would collapse to the local relative path `gs:/b/x`. Both kinds share pathlib's API (`/`, `name`,
`read_text`, `exists`, `glob`, `unlink`), so most code needs only `as_path`; the few operations an object
store does differently (no folders, no rename, no append) live here, each with its local twin.

This module imports nothing from the rest of the project: records, tables and the harness all use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

from etils import epath

AnyPath: TypeAlias = Path | epath.Path
COPY_CHUNK = 8 << 20  # bytes per read when copying a file to or from a bucket


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL (`gs://...`, `s3://...`): a path that only epath can reach."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> AnyPath:
    """`path` as the object that reaches it: pathlib.Path for a local path (unchanged, relative stays
    relative), epath.Path for a URL."""
    text = os.fspath(path)
    return epath.Path(text) if is_remote(text) else Path(text)


def make_dirs(path: AnyPath) -> None:
    """Create a local folder and its parents; nothing on an object store, where a folder is only the
    common prefix of its objects and every write creates its own key."""
    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def write_object(path: AnyPath, data: bytes) -> None:
    """One object in one call: an object store publishes it whole or not at all, so this is the
    remote counterpart of a local temp file + rename."""
    as_path(path).write_bytes(data)


def move_file(source: AnyPath, target: AnyPath) -> None:
    """Move a file, replacing `target`: os.replace (atomic) between local paths; on an object store, a
    single write of the bytes (atomic there) and then the source's deletion."""
    if not is_remote(source) and not is_remote(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return
    copy_file(source, target)
    as_path(source).unlink(missing_ok=True)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy bytes from one place to another, local or remote, in COPY_CHUNK reads (params files are
    gigabytes; they are never held whole in memory)."""
    target = as_path(target)
    make_dirs(target.parent)
    with as_path(source).open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            dst.write(chunk)


def remove_tree(path: AnyPath) -> None:
    """Delete a folder and everything under it; a missing one, or one that cannot be deleted, is left
    as it is (shutil.rmtree's ignore_errors, on both kinds of path)."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        as_path(path).rmtree(missing_ok=True)
    except OSError:
        pass


def append_text(path: AnyPath, text: str) -> None:
    """Add `text` at the end of a file. An object cannot be appended to, so a remote file is read and
    written back whole: right for the small logs this is used for, and not safe against a concurrent
    writer of the same object."""
    if not is_remote(path):
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return
    path = as_path(path)
    try:
        before = path.read_bytes()
    except FileNotFoundError:
        before = b""
    write_object(path, before + text.encode("utf-8"))


@contextlib.contextmanager
def local_file(target: AnyPath) -> Iterator[Path]:
    """A local path to write `target` through, for writers that only take a file name (np.savez, a
    task's submission writer): `target` itself when it is local; otherwise a temp file that is copied
    to `target` when the block ends without an error, and deleted either way."""
    if not is_remote(target):
        yield Path(target)
        return
    folder = Path(tempfile.mkdtemp(prefix="paligemma-upload-"))
    try:
        local = folder / as_path(target).name
        yield local
        copy_file(local, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_text(path: AnyPath, text: str) -> None:
    """A UTF-8 text file: Path.write_text locally (as ever), one object write on a bucket (the exact
    bytes: no newline translation by a text-mode stream)."""
    if is_remote(path):
        write_object(path, text.encode("utf-8"))
    else:
        Path(path).write_text(text, encoding="utf-8")


class LocalCopy:
    """A local working copy of a file that may live in a bucket, for writers that append and rewrite in
    place (the CSV logs): they write `local`, and `push()` uploads it whole, since an object cannot be
    appended to. A local target is its own copy: `local` is the target and pushing does nothing.

    A remote target's current content is downloaded first, so a resumed cell's log continues it."""

    def __init__(self, target: str | os.PathLike, push_every_s: float = 30.0):
        self.target = as_path(target)
        self.push_every_s = push_every_s
        self._folder: Path | None = None
        self._pushed = 0.0
        if not is_remote(self.target):
            self.local = Path(self.target)
            return
        self._folder = Path(tempfile.mkdtemp(prefix="paligemma-copy-"))
        self.local = self._folder / self.target.name
        try:
            copy_file(self.target, self.local)
        except FileNotFoundError:
            self.local.unlink(missing_ok=True)

    def push(self) -> None:
        """Upload the local copy (a local target: nothing to do)."""
        if self._folder is not None and self.local.exists():
            copy_file(self.local, self.target)
            self._pushed = time.monotonic()

    def push_if_due(self) -> None:
        """push(), at most once per `push_every_s` (a per-step log would otherwise upload every step)."""
        if self._folder is not None and time.monotonic() - self._pushed >= self.push_every_s:
            self.push()

    def close(self) -> None:
        """Upload the last state and delete the local copy."""
        self.push()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
