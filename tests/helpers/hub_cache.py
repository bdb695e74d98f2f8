"""Lay a local directory into a Hugging Face Hub cache exactly as huggingface_hub lays out a download.

huggingface_hub has no public call that adds files to its cache without downloading them, so this writes
the documented layout (https://huggingface.co/docs/huggingface_hub/guides/manage-cache):

    <cache>/models--<org>--<name>/blobs/<etag>              file contents; the etag is the sha256 of an
                                                            LFS file (*.safetensors, *.model), the git
                                                            blob sha1 of any other file
    <cache>/models--<org>--<name>/snapshots/<commit>/<path> relative symlink to ../../blobs/<etag>
    <cache>/models--<org>--<name>/refs/main                 the commit hash, no newline

Tests check the result with huggingface_hub's own `scan_cache_dir`, which rejects a malformed cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".model", ".bin", ".npz")


def _etag(path: Path, data: bytes) -> str:
    if path.name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_cache(cache: Path, repo_id: str, source: Path, commit: str | None = None) -> Path:
    """Copy every file under `source` into `cache` as revision `main` of model repo `repo_id`;
    returns the snapshot directory."""
    files = sorted(p for p in Path(source).rglob("*") if p.is_file())
    commit = commit or hashlib.sha1(repo_id.encode() + b"".join(p.read_bytes() for p in files)).hexdigest()
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for file in files:
        data = file.read_bytes()
        blob = repo / "blobs" / _etag(file, data)
        blob.write_bytes(data)
        relative = file.relative_to(source)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
