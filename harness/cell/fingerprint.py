"""Content fingerprints of base checkpoints and tokenizers, cached by (path, size, mtime).

A cell's id hashes the fingerprint of what it starts from, so a checkpoint re-trained at the same path
gives new cell ids instead of silently reusing old records. Hashing a 56 GB checkpoint on every dry run
would be unusable, so a file's digest is cached in `cache_root()/fingerprints.json` (tasks/prepared.py)
under its absolute path, size and modification time (a rewrite changes the mtime, so the cache never
hides one), and a file above FULL_HASH_LIMIT is hashed on its size plus SAMPLES evenly spaced 1 MiB blocks
(the first and the last included): any re-training or re-export rewrites nearly every block.

`fingerprint(checkpoint)` takes the grid's checkpoint string: a file, a directory (a Hugging Face
snapshot: every file in it), "random", or anything a later resolver maps to one of those.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from tasks.prepared import cache_root

RANDOM = "random"
MISSING = "missing"
FULL_HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed whole
BLOCK = 1 << 20
SAMPLES = 64

_memo: dict[tuple[str, int, int], str] = {}


def _cache_file() -> Path:
    return cache_root() / "fingerprints.json"


def _load_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(entries: dict[str, str]) -> None:
    """Best effort (a read-only home must not stop a run): temp file + rename, so readers never see half."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fingerprints.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def _digest_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(BLOCK), b""):
                h.update(chunk)
        else:
            h.update(f"sampled:{size}:".encode())
            for i in range(SAMPLES):
                f.seek((size - BLOCK) * i // (SAMPLES - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 hex of a file's bytes (sampled above FULL_HASH_LIMIT), cached by (path, size, mtime)."""
    path = Path(path).absolute()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    disk_key = f"{key[0]}|{key[1]}|{key[2]}"
    cache = _load_cache()
    digest = cache.get(disk_key)
    if digest is None:
        digest = _digest_file(path, st.st_size)
        cache = {k: v for k, v in _load_cache().items() if not k.startswith(f"{key[0]}|")}
        cache[disk_key] = digest
        _save_cache(cache)
    _memo[key] = digest
    return digest


def fingerprint(checkpoint: str | os.PathLike) -> str:
    """A hex digest of what `checkpoint` holds: "random" for random init, "missing" when nothing is
    there yet (the cell's id changes once it exists, which the dry run warns about)."""
    name = os.fspath(checkpoint)
    if name == RANDOM:
        return RANDOM
    path = Path(name)
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        h = hashlib.sha256(b"dir:")
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            h.update(f"{f.relative_to(path).as_posix()}:{file_digest(f)}\n".encode())
        return h.hexdigest()
    return MISSING
