"""Where prepared (TFDS) data lives, keyed on the raw files it was made from.

A task's raw files are prepared once into array_record files; this module decides where, and when that
must happen again. The cache folder is outside the user's data folder (the run's workdir for `run`,
`cache_root()/data` otherwise, or a `--cache-dir`):

    <cache>/<task>/<key of the raw folder's absolute path>/
        last.json                   the raw files (relative name -> [size, mtime_ns]) last prepared
        <fingerprint>-<splits>/     one prepared dataset: TFDS data of those splits from those files

The fingerprint hashes every raw file's relative name, size and modification time (not its bytes: a
dataset of 100k images is stat-ed in about a second, hashed in minutes), so editing one answer in a JSON
file means a new folder and a fresh preparation, announced on stderr in one line. Only the splits a role
reads are prepared, so scoring the eval split does not need the train split's raw files. A folder is
prepared under a temp name and renamed into place, so a killed preparation never leaves half a dataset
and two processes preparing the same data both end with a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

IGNORED = ("_tfds",)  # the in-folder cache of older versions


def cache_root() -> Path:
    """The project's cache folder: $PALIGEMMA_TRANSFER_CACHE, else $XDG_CACHE_HOME/paligemma-transfer,
    else ~/.cache/paligemma-transfer."""
    if os.environ.get("PALIGEMMA_TRANSFER_CACHE"):
        return Path(os.environ["PALIGEMMA_TRANSFER_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "paligemma-transfer"


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


def describe_change(old: dict[str, list[int]], new: dict[str, list[int]]) -> str:
    """"changed a.json; added b.png; removed c.png" (a few names of each)."""
    parts = []
    for label, names in (("changed", [n for n in new if n in old and old[n] != new[n]]),
                         ("added", [n for n in new if n not in old]),
                         ("removed", [n for n in old if n not in new])):
        if names:
            shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{label} {shown}")
    return "; ".join(parts)


def _home(task: str, manual_dir: Path, cache_dir: Path | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "data"
    return root / task / hashlib.sha256(str(Path(manual_dir).absolute()).encode()).hexdigest()[:16]


def _match(home: Path, fp: str, wanted: set[str]) -> Path | None:
    for candidate in sorted(home.glob(f"{fp}-*")) if home.is_dir() else []:
        have = set(candidate.name.split("-", 2)[2].split("+"))
        if candidate.is_dir() and ("all" in have or wanted <= have):
            return candidate
    return None


def find_prepared(task: str, version: int, manual_dir: Path, cache_dir: Path | None,
                  splits: Iterable[str]) -> Path | None:
    """The prepared folder for the current raw files, if there is one; prepares nothing."""
    fp = files_fingerprint(raw_files(Path(manual_dir).absolute()))[:16] + f"-v{version}"
    return _match(_home(task, manual_dir, cache_dir), fp, set(splits))


def prepared_dir(task: str, version: int, manual_dir: Path, cache_dir: Path | None, splits: Iterable[str],
                 prepare: Callable[[Path], None]) -> Path:
    """The folder holding `splits` of the task prepared from the current raw files; `prepare(folder)` is
    called to make it when none matches (into a temp folder renamed into place)."""
    manual_dir = Path(manual_dir).absolute()
    home = _home(task, manual_dir, cache_dir)
    files = raw_files(manual_dir)
    fp = files_fingerprint(files)[:16] + f"-v{version}"
    wanted = set(splits)
    found = _match(home, fp, wanted)
    if found is not None:
        return found
    last = home / "last.json"
    try:
        previous = json.loads(last.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("files") not in (None, files):
        print(f"{task}: raw files in {manual_dir} changed since they were prepared "
              f"({describe_change(previous['files'], files)}); preparing them again", file=sys.stderr)
        for old in home.glob("*-v*-*"):
            if old.is_dir() and not old.name.startswith(fp):
                shutil.rmtree(old, ignore_errors=True)
    target = home / f"{fp}-{'+'.join(sorted(wanted))}"
    tmp = home / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        prepare(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # prepared meanwhile by another process
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_last(last, {"manual_dir": str(manual_dir), "files": files})
    return target


def _write_last(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
