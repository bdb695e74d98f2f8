"""Elements of a large JSON file's top-level list, one at a time: bounded memory for the official files.

VQAv2's train annotations are ~330 MB of JSON; `json.load` turns them into ~2.2 GiB of Python objects
before the first example is written. `ijson` (its C backend) walks the file and builds one element at a
time instead. Errors keep the shape of `tasks.base.read_json`'s: file, line and column.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.errors import DataError

# A malformed file up to this size is read whole once more to name the line and column of the error
# (ijson says what is wrong, not where); a larger one is named with ijson's message alone.
LOCATE_LIMIT = 256 << 20


def items(path: Path, key: str) -> Iterator[Any]:
    """The elements of the list under top-level `key` in the JSON object in `path`.

    A missing key or one that is not a list is a DataError naming the file and field (an empty list yields
    nothing: the caller says what an empty split means)."""
    import ijson

    count = 0
    try:
        with open(path, "rb") as f:
            for item in ijson.items(f, f"{key}.item", use_float=True):
                count += 1
                yield item
    except ijson.JSONError as e:
        raise _malformed(path, e) from None
    if count == 0:
        _check_list(path, key)


def _check_list(path: Path, key: str) -> None:
    """No element came: say why when it is not an empty list (the file has no such key, or not a list)."""
    import ijson

    with open(path, "rb") as f:
        events = ijson.parse(f)
        first = next(events, ("", "nothing", None))[1]
        if first != "start_map":
            raise DataError(f"{path}: expected a JSON object with a list {key!r}, got {first}")
        for prefix, event, _ in events:
            if prefix == key:
                if event != "start_array":
                    raise DataError(f"{path}: field {key!r} should be list, got {event}")
                return
    raise DataError(f"{path}: missing field {key!r}")


def _malformed(path: Path, error: Exception) -> DataError:
    from tasks.base import read_json

    if Path(path).stat().st_size <= LOCATE_LIMIT:
        try:
            read_json(path)
        except DataError as located:
            return located
    return DataError(f"{path}: malformed JSON: {str(error).splitlines()[0]}")
