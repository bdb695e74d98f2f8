"""Where prepared data lives: one cache shared by `run`, `score` and every workdir, keyed by the raw files'
content.

    <cache>/digests.json                     sha256 of raw annotation files by (path, size, mtime_ns)
    <cache>/<task>/<content key>/
        v<version>-<split>/                  one prepared split (tasks/records.py)
        v<version>-splits.json               the splits the raw files hold, once all were prepared
    <cache>/<task>/sources/<path key>.json   per raw folder: its files and key when last prepared

`<cache>` is `cache_root()/data` unless a `--cache-dir` names another.

The content key hashes every raw file's relative name and size, and the bytes of every file that is not
an image (the question, answer and OCR JSONs, CSVs, reports). The key does not depend on where the folder
is or on modification times, so a moved or copied raw folder finds its prepared data; hashing the
annotations catches any edit of a question or an answer (sizes alone would miss a same-length edit).
Images are known by name and size only: hashing 19 GB of COCO images would cost minutes on every new
path, and an edited JPEG or PNG keeps its exact size only by coincidence. The annotation digests are
memoised in `digests.json` by (absolute path, size, mtime_ns), so an unchanged folder is stat-ed, not read.

A split is written under a temp name (host, pid and a random token: containers on several hosts share
pids) and renamed into place once complete: a killed preparation never leaves half a split, and hosts
preparing the same split at once all end with the complete one (the first rename wins). A raw folder
whose content changed is announced on stderr in one line, naming the files, and the entry it used before
is removed unless another raw folder still uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

IGNORED = ("_tfds",)  # the in-folder cache of older versions
# Files known by name and size in the content key; everything else is hashed.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".dcm"})
STALE_TEMP_S = 24 * 3600  # a temp folder this old is a killed preparation's: removed
_BLOCK = 1 << 20


def cache_root() -> Path:
    """The project's cache folder: $PALIGEMMA_TRANSFER_CACHE, else $XDG_CACHE_HOME/paligemma-transfer,
    else ~/.cache/paligemma-transfer."""
    if os.environ.get("PALIGEMMA_TRANSFER_CACHE"):
        return Path(os.environ["PALIGEMMA_TRANSFER_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "paligemma-transfer"


def data_cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_root() / "data"


def raw_files(manual_dir: Path) -> dict[str, list[int]]:
    """Relative name -> [size, mtime_ns] of every raw file (dot-files and old caches left out)."""
    found = {}
    for root, dirs, files in os.walk(manual_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) == manual_dir and d in IGNORED))
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root) / name
            st = path.stat()
            found[path.relative_to(manual_dir).as_posix()] = [st.st_size, st.st_mtime_ns]
    return found


def files_fingerprint(files: dict[str, list[int]]) -> str:
    blob = json.dumps(sorted(files.items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def describe_change(old: dict[str, list], new: dict[str, list]) -> str:
    """"changed a.json; added b.png; removed c.png" (a few names of each)."""
    parts = []
    for label, names in (("changed", [n for n in new if n in old and old[n] != new[n]]),
                         ("added", [n for n in new if n not in old]),
                         ("removed", [n for n in old if n not in new])):
        if names:
            shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{label} {shown}")
    return "; ".join(parts)


# --- the content key ----------------------------------------------------------------------------------

def content_files(manual_dir: Path, cache: Path) -> dict[str, list]:
    """Relative name -> [size, sha256 of the bytes, or None for an image] of every raw file."""
    manual_dir = Path(manual_dir).absolute()
    digests = _Digests(cache / "digests.json")
    out = {}
    for name, (size, mtime_ns) in raw_files(manual_dir).items():
        is_image = Path(name).suffix.lower() in IMAGE_SUFFIXES
        out[name] = [size, None if is_image else digests.get(manual_dir / name, size, mtime_ns)]
    digests.save()
    return out


def content_key(files: dict[str, list]) -> str:
    return files_fingerprint(files)[:16]


class _Digests:
    """sha256 of files by (absolute path, size, mtime_ns), kept in one JSON file (best effort: a
    read-only cache only costs re-hashing)."""

    def __init__(self, path: Path):
        self.path, self.changed = path, False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.entries: dict[str, str] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    def get(self, path: Path, size: int, mtime_ns: int) -> str:
        key = f"{path}|{size}|{mtime_ns}"
        digest = self.entries.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(_BLOCK), b""):
                    h.update(chunk)
            digest = h.hexdigest()
            stale = f"{path}|"
            self.entries = {k: v for k, v in self.entries.items() if not k.startswith(stale)}
            self.entries[key], self.changed = digest, True
        return digest

    def save(self) -> None:
        if self.changed:
            try:
                _write_json(self.path, self.entries)
            except OSError:
                pass


# --- the cache entry of a raw folder ------------------------------------------------------------------

def split_folder(entry: Path, version: int, split: str) -> Path:
    return Path(entry) / f"v{version}-{split}"


def entry_for(task: str, manual_dir: Path, cache_dir: str | Path | None) -> Path:
    """The cache entry of the raw files now in `manual_dir` (made if new); announces a change of content
    since this folder was last prepared, and removes the entry it used before if nothing else uses it."""
    manual_dir = Path(manual_dir).absolute()
    cache = data_cache(cache_dir)
    files = content_files(manual_dir, cache)
    key = content_key(files)
    entry = cache / task / key
    record_path = cache / task / "sources" / (hashlib.sha256(str(manual_dir).encode()).hexdigest()[:16] + ".json")
    previous = _read_json(record_path)
    if isinstance(previous, dict) and previous.get("key") not in (None, key):
        print(f"{task}: raw files in {manual_dir} changed since they were prepared "
              f"({describe_change(previous.get('files') or {}, files)}); preparing them again", file=sys.stderr)
        _evict(cache / task, str(previous["key"]), record_path)
    if not isinstance(previous, dict) or previous.get("key") != key:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(record_path, {"manual_dir": str(manual_dir), "key": key, "files": files})
    entry.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(entry)
    return entry


def find_entry(task: str, manual_dir: Path, cache_dir: str | Path | None) -> Path | None:
    """The cache entry of the raw files now in `manual_dir`, if one exists; prepares and announces nothing."""
    cache = data_cache(cache_dir)
    entry = cache / task / content_key(content_files(Path(manual_dir), cache))
    return entry if entry.is_dir() else None


def prepared_sizes(task: str, version: int, manual_dir: Path, cache_dir: str | Path | None,
                   splits: set[str]) -> dict[str, int] | None:
    """Examples per split of `splits` already prepared from the raw files now in `manual_dir`; None when
    any is not (nothing is prepared: a dry run counts what is there)."""
    from tasks.records import read_meta

    entry = find_entry(task, manual_dir, cache_dir)
    if entry is None:
        return None
    sizes = {}
    for split in splits:
        folder = split_folder(entry, version, split)
        if not folder.is_dir():
            return None
        sizes[split] = int(read_meta(folder)["num_examples"])
    return sizes


def _evict(task_dir: Path, key: str, keep_record: Path) -> None:
    for record in (task_dir / "sources").glob("*.json"):
        if record != keep_record and (_read_json(record) or {}).get("key") == key:
            return  # another raw folder holds the same content
    shutil.rmtree(task_dir / key, ignore_errors=True)


def _remove_stale_temps(entry: Path) -> None:
    now = time.time()
    for tmp in entry.glob(".*.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def temp_name(target: Path) -> Path:
    """A sibling of `target` no other process on any host picks."""
    return target.with_name(f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


def write_atomically(target: Path, fill: Callable[[Path], Any]) -> bool:
    """`fill(tmp)` into a fresh temp folder, then rename it to `target`. False when another process put
    `target` in place first (its copy is kept, ours discarded)."""
    tmp = temp_name(target)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def find_prepared(task: str, version: int, manual_dir: Path, cache_dir: str | Path | None,
                  splits: set[str]) -> Path | None:
    """The cache entry holding `splits` prepared from the raw files now in `manual_dir`, or None."""
    entry = find_entry(task, manual_dir, cache_dir)
    if entry is None or not all(split_folder(entry, version, s).is_dir() for s in splits):
        return None
    return entry


def write_atomically_file(target: Path, text: str) -> None:
    """`text` into `target` through a temp file and a rename: readers never see half of it."""
    tmp = temp_name(target)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
