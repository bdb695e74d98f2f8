"""A local folder served as the `gs://` protocol, so remote workdirs are tested through etils.epath's own
fsspec code path without a real bucket.

etils.epath sends every gs:// path to `fsspec.filesystem("gcs", ...)` (cached by its fsspec backend);
`serve_as_gs(root)` registers a filesystem that maps gs://BUCKET/KEY to root/BUCKET/KEY and answers as
gcsfs does (keys without the protocol; a write creates its parent "folders", as an object key needs
none; a write is published whole when it closes, as an object is), then puts back whatever was
registered before.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

PROTOCOLS = ("gs", "gcs")


class _ObjectWrite(LocalFileOpener):
    """A file written to a temp file and renamed into place when it closes: like a GCS object, a reader
    meanwhile sees the previous content (or none), never a truncated or half-written file."""

    def __init__(self, path: str, mode: str, fs: LocalFileSystem):
        super().__init__(path, mode, autocommit=False, fs=fs)

    def close(self) -> None:
        if not self.f.closed:
            self.commit()

    def __exit__(self, *exc) -> None:
        self.close()


class _ObjectDisk(LocalFileSystem):
    """The local filesystem, with writes published whole (_ObjectWrite)."""

    def _open(self, path, mode="rb", block_size=None, **kwargs):
        if "w" not in mode:
            return super()._open(path, mode, block_size, **kwargs)
        path = self._strip_protocol(path)
        self.makedirs(self._parent(path), exist_ok=True)
        return _ObjectWrite(path, mode, fs=self)


class _FolderBucket(DirFileSystem):
    """gs://KEY -> ROOT/KEY. ROOT is a class attribute: fsspec builds filesystems from the protocol's
    class with gcsfs' keyword arguments, which say nothing of a folder."""

    protocol = PROTOCOLS
    ROOT = ""

    def __init__(self, *args, **storage_options):
        del args, storage_options  # gcsfs options (finalize_on_close, project, token, ...)
        super().__init__(path=self.ROOT, fs=_ObjectDisk(auto_mkdir=True))


def _clear_epath_cache() -> None:
    """epath keeps the filesystem it got for each protocol; drop it so the next path asks fsspec."""
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


@contextlib.contextmanager
def serve_as_gs(root: Path) -> Iterator[Path]:
    """While the block runs, gs://BUCKET/KEY is the file root/BUCKET/KEY (through epath and fsspec)."""
    root.mkdir(parents=True, exist_ok=True)
    bucket = type("FolderBucket", (_FolderBucket,), {"ROOT": str(root)})  # a fresh class: its own instance cache
    before = {p: fsspec.registry.get(p) for p in PROTOCOLS}
    for protocol in PROTOCOLS:
        fsspec.register_implementation(protocol, bucket, clobber=True)
    _clear_epath_cache()
    try:
        yield root
    finally:
        for protocol, previous in before.items():
            if previous is not None:
                fsspec.register_implementation(protocol, previous, clobber=True)
            else:  # fsspec.registry is a read-only view of the module's own dict
                importlib.import_module("fsspec.registry")._registry.pop(protocol, None)
        _clear_epath_cache()
